"""The door every dialect's routes go through: who is calling, may they, and a record of it.

`Gate.route` wraps a handler with the one action the route declares
(`cce:imageCache:delete`, …): it reads the body within its size limit, turns the
request into a Principal (a token as `X-Auth-Token` / `Authorization: Bearer`, or
an `SDK-HMAC-SHA256` signature), applies the credential's rate limit, checks the
action against the policy, and records every call whose action can change state in the
audit log (by the action, not the HTTP method: DiDi lists with a POST). Dialects only say
how an error looks in their language.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from imagedepot.api.limits import AuthFailureLimiter, RateLimiter, read_body
from imagedepot.api.wire import client_host
from imagedepot.domain import signing
from imagedepot.domain.errors import DomainError, Unauthenticated
from imagedepot.domain.identity import Principal
from imagedepot.domain.policy import is_read
from imagedepot.ports import AuditEvent, Clock
from imagedepot.services.audit import AuditService
from imagedepot.services.identity import IdentityService, SignedRequest

log = logging.getLogger(__name__)

PUBLIC = "public"
"""The action of routes anyone may call (health, version discovery)."""
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Handler = Callable[[Request, bytes, Principal], Response]
"""A dialect's handler: runs in a worker thread (it may touch the database)."""
StreamHandler = Callable[[Request, Principal], Awaitable[Response]]
"""A handler that reads (or writes) a body too large to hold: it runs on the event loop and
reads `request.stream()` itself; the gate has authenticated it with an empty payload."""
ErrorRenderer = Callable[[DomainError], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


def presented_token(request: Request) -> str | None:
    token = request.headers.get("x-auth-token")
    if token:
        return token.strip()
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def signed_request(request: Request, body: bytes) -> SignedRequest | None:
    """The signature claim and the canonical request rebuilt from what arrived, if signed."""
    authorization = request.headers.get("authorization", "")
    if not signing.is_signature_header(authorization):
        return None
    claim = signing.parse_authorization(authorization)
    headers = {name.lower(): value for name, value in request.headers.items()}
    canonical = signing.canonical_request(
        request.method,
        request.url.path,
        request.query_params.multi_items(),
        headers,
        claim.signed_headers,
        signing.payload_hash(body, request.headers.get("x-sdk-content-sha256")),
    )
    return SignedRequest(claim, request.headers.get("x-sdk-date", ""), canonical)


@dataclass(frozen=True)
class Gate:
    identity: IdentityService
    audit: AuditService
    limiter: RateLimiter
    clock: Clock
    max_body_bytes: int
    auth_failures: AuthFailureLimiter = field(default_factory=lambda: AuthFailureLimiter(0, 1))
    """Off unless given (bootstrap gives the configured one)."""

    def authenticate(self, request: Request, body: bytes) -> Principal:
        hint = request.headers.get("x-project-id") or None
        signed = signed_request(request, body)
        if signed is not None:
            return self.identity.authenticate_signature(signed, hint)
        return self.identity.authenticate_token(presented_token(request), hint)

    def permit(self, principal: Principal, action: str) -> None:
        """The credential's rate limit, then the policy (both in memory)."""
        self.limiter.check(principal.credential_id)
        self.identity.authorize(principal, action)

    def record(
        self, request: Request, principal: Principal | None, action: str, status: int
    ) -> None:
        event = AuditEvent(
            at=self.clock.now(),
            credential_id=principal.credential_id if principal else None,
            project_id=principal.project_id if principal else None,
            action=action,
            target=request.url.path,
            status=status,
            request_id=getattr(request.state, "request_id", ""),
            remote=client_host(request),
        )
        try:
            self.audit.record(event)
        except Exception:
            log.exception("could not record audit event for %s %s", action, event.target)

    async def _serve(
        self,
        request: Request,
        action: str,
        render: ErrorRenderer,
        body: Callable[[], Awaitable[bytes]],
        answer: Callable[[Principal, bytes], Awaitable[Response]],
    ) -> Response:
        """Read the body, authenticate, permit, answer; render domain errors; audit changes."""
        principal: Principal | None = None
        remote = client_host(request)
        try:
            self.auth_failures.check(remote)
            raw = await body()
            try:
                principal = await run_in_threadpool(self.authenticate, request, raw)
            except Unauthenticated:
                self.auth_failures.failed(remote)
                raise
            self.permit(principal, action)
            response = await answer(principal, raw)
        except DomainError as error:
            response = render(error)
        if not is_read(action):
            await run_in_threadpool(self.record, request, principal, action, response.status_code)
        return response

    def route(self, actions: Mapping[str, tuple[str, Handler]], render: ErrorRenderer) -> Endpoint:
        """An endpoint serving each method with its declared action and handler."""

        async def endpoint(request: Request) -> Response:
            action, handler = actions[request.method]

            async def body() -> bytes:
                if request.method not in BODY_METHODS:
                    return b""
                return await read_body(request, self.max_body_bytes)

            async def answer(principal: Principal, raw: bytes) -> Response:
                return await run_in_threadpool(handler, request, raw, principal)

            return await self._serve(request, action, render, body, answer)

        return _declare(endpoint, actions)

    def streaming_route(
        self, actions: Mapping[str, tuple[str, StreamHandler]], render: ErrorRenderer
    ) -> Endpoint:
        """Like `route`, for bodies streamed rather than read whole (image uploads and
        downloads): the body is not read here, so a signature must be over `UNSIGNED-PAYLOAD`
        or an empty body; tokens work as everywhere."""

        async def endpoint(request: Request) -> Response:
            # HEAD is GET without a body (the response classes leave the body out).
            action, handler = actions["GET" if request.method == "HEAD" else request.method]

            async def no_body() -> bytes:
                return b""

            async def answer(principal: Principal, _: bytes) -> Response:
                return await handler(request, principal)

            return await self._serve(request, action, render, no_body, answer)

        return _declare(endpoint, actions)


def _declare(endpoint: Endpoint, actions: Mapping[str, tuple[str, object]]) -> Endpoint:
    """Record each method's action on the endpoint, where the route audit test reads it."""
    endpoint.actions = {method: action for method, (action, _) in actions.items()}  # type: ignore[attr-defined]
    return endpoint


def public(endpoint: Endpoint) -> Endpoint:
    """Mark an endpoint anyone may call; the route audit test accepts it."""
    endpoint.actions = PUBLIC  # type: ignore[attr-defined]
    return endpoint
