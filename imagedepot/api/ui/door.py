"""The console's door, as `api/auth.Gate` is the dialects': who is looking (the session cookie),
may they (the same policy and rate limit as every dialect), is a change really theirs (the
CSRF token of their session, and a same-origin request), and a record of every change in the
audit log.

A page handler gets a `Viewer`; templates ask `viewer.may(action)` to leave out controls the
role may not use, and a request forced past them gets 403 here all the same.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, overload
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from imagedepot.api.auth import Gate
from imagedepot.api.errors import http_status
from imagedepot.api.ui.render import page, secure
from imagedepot.domain.errors import (
    DomainError,
    Forbidden,
    InvalidInput,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
)
from imagedepot.domain.identity import Principal
from imagedepot.domain.policy import is_read
from imagedepot.ports import ConsoleSession
from imagedepot.services.console_sessions import ConsoleSessions

COOKIE = "imagedepot_console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SIGN_IN = "/ui/signin"
MAX_FORM_BYTES = 64 * 1024
AUDITED_PROJECT = "audited_project_id"
"""A handler that changes another project's state (the operator's admin pages) names that
project in `request.state` under this name, so the audit record is filed there."""


@dataclass(frozen=True)
class Viewer:
    """The signed-in person behind a console request."""

    principal: Principal
    session: ConsoleSession
    project_name: str
    allowed: Callable[[Principal, str], bool]

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token

    @property
    def is_operator(self) -> bool:
        """Signed in with the operator's admin token: the admin pages are theirs."""
        return self.principal.system_admin

    def may(self, action: str) -> bool:
        return self.allowed(self.principal, action)


PageHandler = Callable[[Request, Viewer], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


class RefusedChange(Forbidden):
    """A state change without this session's CSRF token, or from another origin."""


@dataclass(frozen=True)
class ConsoleDoor:
    gate: Gate
    sessions: ConsoleSessions

    def may(self, principal: Principal, action: str) -> bool:
        try:
            self.gate.identity.authorize(principal, action)
        except Forbidden:
            return False
        return True

    def viewer(self, request: Request) -> Viewer:
        """The viewer behind the request's cookie (runs in a worker thread)."""
        principal, session = self.sessions.resolve(request.cookies.get(COOKIE))
        names = self.gate.identity.project_names([principal.project_id])
        name = names.get(principal.project_id, principal.project_id)
        return Viewer(principal, session, name, self.may)

    def page(
        self, actions: Mapping[str, tuple[str, PageHandler]], *, anyone_signed_in: bool = False
    ) -> Endpoint:
        """An endpoint serving each method with its declared action and handler; with
        `anyone_signed_in` (signing out) every role may, but it still takes a session and
        the CSRF token."""

        async def endpoint(request: Request) -> Response:
            action, handler = actions["GET" if request.method == "HEAD" else request.method]
            viewer: Viewer | None = None
            try:
                try:
                    viewer = await run_in_threadpool(self.viewer, request)
                except Unauthenticated:
                    if request.method in ("GET", "HEAD"):
                        return secure(RedirectResponse(SIGN_IN, status_code=303))
                    raise
                if not anyone_signed_in:
                    self.gate.permit(viewer.principal, action)
                if request.method not in ("GET", "HEAD"):
                    await check_change(request, viewer.csrf_token)
                response = await handler(request, viewer)
            except DomainError as error:
                response = error_page(request, error, viewer)
            if not is_read(action):
                principal = viewer.principal if viewer else None
                affected = getattr(request.state, AUDITED_PROJECT, None)
                if principal is not None and affected:
                    # The operator acts on another project: the record belongs to that one.
                    principal = dataclasses.replace(principal, project_id=affected)
                await run_in_threadpool(
                    self.gate.record, request, principal, action, response.status_code
                )
            return response

        endpoint.actions = {method: action for method, (action, _) in actions.items()}  # type: ignore[attr-defined]
        return endpoint


async def check_change(request: Request, csrf_token: str) -> None:
    """Refuse a state change that is not this session's own: another origin, or a missing or
    wrong CSRF token (a header for scripts, a form field for forms)."""
    if not same_origin(request):
        raise RefusedChange("refused: the request comes from another site")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        sent = str((await form_of(request)).get(CSRF_FIELD, ""))
    if not sent or not hmac.compare_digest(sent.encode(), csrf_token.encode()):
        raise RefusedChange("refused: the form is stale or not from this console; reload the page")


def same_origin(request: Request) -> bool:
    """Browsers name the origin of a POST; when one is named it must be this server.

    Under a no-referrer policy (one a proxy in front may add) a browser sends `Origin: null`
    even for the console's own forms; then only its Sec-Fetch-Site, which no page can set,
    may vouch for the request."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return site == "same-origin"
    expected = f"{request.url.scheme}://{request.url.netloc}"
    return origin == expected


async def form_of(request: Request) -> Mapping[str, Any]:
    """The urlencoded form of a request, read once and within MAX_FORM_BYTES."""
    cached: Mapping[str, Any] | None = getattr(request.state, "console_form", None)
    if cached is not None:
        return cached
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge(f"the form is over {MAX_FORM_BYTES} bytes")
    fields = {key: values[-1] for key, values in parse_qs(body.decode(errors="replace")).items()}
    request.state.console_form = fields
    return fields


@overload
def form_number(
    form: Mapping[str, Any], field: str, *, default: int, within: tuple[int, int] | None = None
) -> int: ...


@overload
def form_number(
    form: Mapping[str, Any],
    field: str,
    *,
    default: None = None,
    within: tuple[int, int] | None = None,
) -> int | None: ...


def form_number(
    form: Mapping[str, Any],
    field: str,
    *,
    default: int | None = None,
    within: tuple[int, int] | None = None,
) -> int | None:
    """A whole number from a form field (`default` when it is blank): ASCII digits, at most
    nine of them, and inside `within` when given; InvalidInput naming the field otherwise."""
    text = str(form.get(field, "")).strip()
    if not text:
        return default
    number = int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None
    if within is not None:
        lowest, highest = within
        if number is None or not lowest <= number <= highest:
            raise InvalidInput(
                f"{field} must be a whole number from {lowest} to {highest}", field=field
            )
    if number is None:
        raise InvalidInput(f"{field} must be a whole number", field=field)
    return number


def error_page(request: Request, error: DomainError, viewer: Viewer | None) -> Response:
    status = http_status(error)
    response = page(
        request,
        "message.html",
        {"viewer": viewer, "title": _TITLES.get(status, "Something went wrong"), "error": error},
        status=status,
    )
    if isinstance(error, RateLimited):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def message_page(request: Request, status: int, message: str) -> Response:
    """A refusal or failure that reached no console handler (routing's 404 and 405, the
    database away, an unhandled error) as a page of the console, not a JSON body."""
    title = _TITLES.get(status, "Something went wrong")
    values = {"viewer": None, "title": title, "error": {"message": message}}
    return page(request, "message.html", values, status=status)


_TITLES = {
    400: "That did not work",
    401: "Sign in first",
    403: "Not allowed",
    404: "Not found",
    409: "That changed meanwhile",
    413: "Too large",
    429: "Slow down",
    503: "Try again shortly",
}
