"""The OCI Distribution API, pull side, on the registry port: what the caches hold, as skopeo,
containerd and docker pull it.

Manifests go out byte for byte with their stored media type; blobs stream from disk in large
buffers (with Range, HEAD and ETag), never read whole. Errors use the spec's
`{"errors":[{code,message,detail}]}` body, and push methods answer 405 UNSUPPORTED.
Authentication is the token flow registries use: a 401 with a Bearer challenge naming
`/token`, which exchanges a project credential (basic auth, any username) for a short-lived
pull token, or hands out an anonymous one. A request without credentials pulls from the
projects that allow anonymous pulls; when that finds nothing it gets the challenge, so a
client that has credentials learns where to use them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from imagedepot.api.auth import public
from imagedepot.api.blob_responses import blob_response
from imagedepot.api.context import RegistryContext
from imagedepot.api.errors import finish
from imagedepot.api.wire import client_host
from imagedepot.domain.errors import (
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    StorageFull,
    Unauthenticated,
    UpstreamUnavailable,
)
from imagedepot.domain.manifests import OCI_INDEX
from imagedepot.domain.served_names import served_name
from imagedepot.services.identity import PROJECT_HEADER
from imagedepot.services.pull_through import FollowedBlob
from imagedepot.services.pull_tokens import PULL_ACTION, PullToken
from imagedepot.services.serving import (
    ANONYMOUS,
    BlobUnknown,
    DigestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    Page,
    Puller,
    ServedBlob,
)

log = logging.getLogger(__name__)

SERVICE = "imagedepot"
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
PULL_METHODS = frozenset({"GET", "HEAD"})
EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
MAX_TOKEN_FORM_BYTES = 64 * 1024
MAX_PAGE_SIZE = 2**63 - 1  # what distribution's strconv.Atoi takes; more is refused, not clamped
BLOB_CACHE_CONTROL = "max-age=31536000"  # content-addressed: a blob never changes


class PaginationInvalid(InvalidInput):
    """`n` is not a non-negative integer."""


_ERRORS: list[tuple[type[DomainError], int, str]] = [
    (NameInvalid, 400, "NAME_INVALID"),
    (DigestInvalid, 400, "DIGEST_INVALID"),
    (PaginationInvalid, 400, "PAGINATION_NUMBER_INVALID"),
    (NameUnknown, 404, "NAME_UNKNOWN"),
    (ManifestUnknown, 404, "MANIFEST_UNKNOWN"),
    (BlobUnknown, 404, "BLOB_UNKNOWN"),
    (Unauthenticated, 401, "UNAUTHORIZED"),
    (RateLimited, 429, "TOOMANYREQUESTS"),
    (Forbidden, 403, "DENIED"),
    (NotFound, 404, "NAME_UNKNOWN"),
    (UpstreamUnavailable, 503, "UNAVAILABLE"),
    (StorageFull, 503, "UNAVAILABLE"),
    (InvalidInput, 400, "UNSUPPORTED"),
    (DomainError, 500, "UNKNOWN"),
]


def error_response(
    status: int,
    code: str,
    message: str,
    detail: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    error = {"code": code, "message": message, "detail": detail or {}}
    return JSONResponse(
        {"errors": [error]}, status_code=status, headers={**API_VERSION, **(headers or {})}
    )


def domain_error_response(error: DomainError, detail: Any = None) -> Response:
    status, code = next((s, c) for kind, s, c in _ERRORS if isinstance(error, kind))
    return finish(error_response(status, code, error.message, detail), error)


def internal_error_response() -> Response:
    return error_response(500, "UNKNOWN", "internal error; see the server log")


def http_error_response(status: int, message: str, headers: Mapping[str, str] | None) -> Response:
    """Starlette's own refusals (no route matches, a method a route lacks) in the spec's body:
    a registry client parses every error body, and a plain-text one reads as garbage."""
    code = {404: "NAME_UNKNOWN", 405: "UNSUPPORTED"}.get(status, "UNSUPPORTED")
    return error_response(status, code, message, None, dict(headers or {}))


def presented_credential(request: Request) -> str | None:
    """What the request presents: a bearer token, a basic-auth password (the username is not
    looked at), or an `X-Auth-Token`; None for none."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            _, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated("the basic credentials are not base64 user:password") from None
        return password or None  # `user:` or `:`: a client that logs in with nothing
    token = request.headers.get("x-auth-token", "").strip()
    return token or None


def challenge(request: Request, scope: str | None = None, error: str | None = None) -> str:
    realm = str(request.base_url).rstrip("/") + "/token"
    parts = [f'realm="{realm}"', f'service="{SERVICE}"']
    if scope:
        parts.append(f'scope="{scope}"')
    if error:
        parts.append(f'error="{error}"')
    return "Bearer " + ",".join(parts)


def unauthorized(request: Request, message: str, *, invalid: bool = False) -> JSONResponse:
    name = request.path_params.get("name")
    scope = f"repository:{name}:pull" if name and _is_repository_name(name) else None
    header = challenge(request, scope, "invalid_token" if invalid else None)
    return error_response(
        401, "UNAUTHORIZED", message, _detail(request), {"WWW-Authenticate": header}
    )


def accepted_media_types(request: Request) -> frozenset[str]:
    """Every media type named by the Accept headers (Go clients send several), without params."""
    return frozenset(
        part.split(";", 1)[0].strip()
        for value in request.headers.getlist("accept")
        for part in value.split(",")
        if part.strip()
    )


def page_size(request: Request) -> int | None:
    text = request.query_params.get("n")
    if text is None or text == "":
        return None
    # isdigit() alone takes "²" and other digits int() refuses; the length check comes
    # before int() so that thousands of digits never reach it.
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_PAGE_SIZE)):
        raise PaginationInvalid(_bad_page_size(text), field="n")
    size = int(text)
    if size > MAX_PAGE_SIZE:
        raise PaginationInvalid(_bad_page_size(text), field="n")
    return size


def _bad_page_size(text: str) -> str:
    shown = text if len(text) <= 32 else f"{text[:32]}… ({len(text)} characters)"
    return f"n must be a non-negative integer no larger than {MAX_PAGE_SIZE}, got {shown!r}"


def paged(request: Request, key: str, page: Page, body: dict[str, Any]) -> Response:
    """`body` with the page's items under `key`, and a Link to the next page when there is one."""
    headers = dict(API_VERSION)
    if page.more and page.items:
        query = {"last": page.items[-1]}
        if request.query_params.get("n"):
            query["n"] = request.query_params["n"]
        headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    return JSONResponse({**body, key: page.items}, headers=headers)


def not_modified(request: Request, etag: str) -> bool:
    wanted = request.headers.get("if-none-match")
    return wanted is not None and (wanted.strip() == "*" or etag in wanted)


def _detail(request: Request) -> dict[str, str]:
    return {key: value for key, value in request.path_params.items() if key != "rest"}


def _is_repository_name(name: str) -> bool:
    try:
        served_name(name)
    except InvalidInput:
        return False
    return True


def check_repository_name(request: Request) -> None:
    """NameInvalid for a path whose name is no repository name, before anything echoes it
    (the challenge's scope is a header: a control character there breaks the response)."""
    name = request.path_params.get("name")
    if name is not None and not _is_repository_name(name):
        raise NameInvalid(f"{name!r} is not a repository name", field="name")


PullHandler = Callable[[Request, Puller], Awaitable[Response]]


def for_pullers(error: Unauthenticated) -> Unauthenticated:
    """The refusal as a registry client should read it: the admin token's "send
    X-Project-Id" means nothing to skopeo or containerd, which send no such header."""
    if error.field != PROJECT_HEADER:
        return error
    return Unauthenticated(
        "the admin token belongs to no project, so it pulls nothing: log in with a "
        "project's credential (imagedepot credentials create --project NAME)"
    )


def routes(context: RegistryContext) -> list[BaseRoute]:
    serving, tokens, failures = context.serving, context.tokens, context.auth_failures
    pull_through = context.pull_through
    recording: set[asyncio.Task[None]] = set()

    def puller_of(request: Request) -> Puller | None:
        credential = presented_credential(request)
        try:
            return None if credential is None else tokens.authenticate(credential)
        except Unauthenticated as error:
            raise for_pullers(error) from None

    def issue(credential: str | None) -> PullToken:
        try:
            return tokens.issue(credential)
        except Unauthenticated as error:
            raise for_pullers(error) from None

    def pull(handler: PullHandler) -> Callable[[Request], Awaitable[Response]]:
        """Refuse push methods, find who pulls, and answer errors in the spec's form; an
        anonymous pull that finds nothing is asked to authenticate instead."""

        async def endpoint(request: Request) -> Response:
            if request.method not in PULL_METHODS:
                return unsupported(request)
            try:
                check_repository_name(request)
            except NameInvalid as error:
                return domain_error_response(error, _detail(request))
            remote = client_host(request)
            try:
                failures.check(remote)
                presented = await run_in_threadpool(puller_of, request)
            except (Forbidden, RateLimited) as error:
                return domain_error_response(error, _detail(request))
            except DomainError as error:
                failures.failed(remote)
                return unauthorized(request, error.message, invalid=True)
            puller = presented or ANONYMOUS
            try:
                return await handler(request, puller)
            except (NameUnknown, BlobUnknown) as error:
                if puller.anonymous and not (
                    isinstance(error, BlobUnknown)
                    and await run_in_threadpool(
                        serving.knows_name, puller, request.path_params["name"]
                    )
                ):
                    return unauthorized(request, f"authentication required: {error.message}")
                return domain_error_response(error, _detail(request))
            except DomainError as error:
                return domain_error_response(error, _detail(request))

        return endpoint

    def record_use(cache_id: str) -> None:
        try:
            serving.record_use(cache_id)
        except Exception:
            log.exception("could not record the use of cache %s", cache_id)

    def note_use(cache_id: str) -> None:
        """Record the pull off the request's path: the response never waits for the write."""
        if serving.use_due(cache_id):
            task = asyncio.create_task(run_in_threadpool(record_use, cache_id))
            recording.add(task)
            task.add_done_callback(recording.discard)

    async def version_check(request: Request) -> Response:
        if request.method not in PULL_METHODS:
            return unsupported(request)
        try:
            presented = await run_in_threadpool(puller_of, request)
        except DomainError as error:
            return unauthorized(request, error.message, invalid=True)
        if presented is None:
            return unauthorized(request, "authentication required")
        return JSONResponse({}, headers=API_VERSION)

    @pull
    async def manifest(request: Request, puller: Puller) -> Response:
        name, reference = request.path_params["name"], request.path_params["reference"]
        upstream, accepted = request.query_params.get("ns"), accepted_media_types(request)
        if pull_through is not None and not puller.anonymous:
            served = await pull_through.manifest(
                puller, name, reference, upstream=upstream, accepted=accepted
            )
        else:
            served = await run_in_threadpool(
                serving.manifest, puller, name, reference, upstream=upstream, accepted=accepted
            )
        note_use(served.cache_id)
        etag = f'"{served.digest}"'
        headers = {**API_VERSION, "Docker-Content-Digest": served.digest, "ETag": etag}
        if not_modified(request, etag):
            return Response(status_code=304, headers=headers)
        return Response(served.body, media_type=served.media_type, headers=headers)

    @pull
    async def blob(request: Request, puller: Puller) -> Response:
        name, digest = request.path_params["name"], request.path_params["digest"]
        served: ServedBlob | FollowedBlob
        if pull_through is not None and not puller.anonymous:
            served = await pull_through.blob(puller, name, digest)
        else:
            served = await run_in_threadpool(serving.blob, puller, name, digest)
        etag = f'"{served.digest}"'
        headers = {
            **API_VERSION,
            "Docker-Content-Digest": served.digest,
            "ETag": etag,
            "Cache-Control": BLOB_CACHE_CONTROL,
        }
        if not_modified(request, etag):
            return Response(status_code=304, headers=headers)
        if isinstance(served, FollowedBlob):
            # Still arriving from the upstream: the whole blob (no ranges), as it comes.
            headers["Content-Length"] = str(served.size)
            if request.method == "HEAD":
                return Response(status_code=200, headers=headers, media_type=served.media_type)
            return StreamingResponse(
                served.live.follow(), headers=headers, media_type=served.media_type
            )
        try:
            return await blob_response(
                request, served.source, served.digest, served.size, headers, may_redirect=True
            )
        except FileNotFoundError:
            raise BlobUnknown(f"blob {served.digest} is not known") from None

    @pull
    async def referrers(request: Request, puller: Puller) -> Response:
        artifact_type = request.query_params.get("artifactType") or None
        body = await run_in_threadpool(
            serving.referrers,
            puller,
            request.path_params["name"],
            request.path_params["digest"],
            artifact_type,
        )
        headers = dict(API_VERSION)
        if artifact_type is not None:
            headers["OCI-Filters-Applied"] = "artifactType"
        return Response(body, media_type=OCI_INDEX, headers=headers)

    @pull
    async def tags(request: Request, puller: Puller) -> Response:
        name = request.path_params["name"]
        page = await run_in_threadpool(
            lambda: serving.tags(
                puller,
                name,
                upstream=request.query_params.get("ns"),
                limit=page_size(request),
                after=request.query_params.get("last"),
            )
        )
        return paged(request, "tags", page, {"name": name})

    @pull
    async def catalog(request: Request, puller: Puller) -> Response:
        page = await run_in_threadpool(
            lambda: serving.catalog(
                puller, limit=page_size(request), after=request.query_params.get("last")
            )
        )
        return paged(request, "repositories", page, {})

    async def token(request: Request) -> Response:
        """GET with basic auth (or none, for an anonymous token), as docker and skopeo ask;
        POST with an OAuth2 password grant, as containerd asks when it has credentials."""
        remote = client_host(request)
        try:
            failures.check(remote)
        except RateLimited as error:
            return domain_error_response(error)
        if request.method == "POST":
            form = await _token_form(request)
            if form.get("grant_type") != "password":
                return JSONResponse(
                    {"error": "unsupported_grant_type", "error_description": "use password"},
                    status_code=400,
                )
            credential: str | None = form.get("password") or None
        else:
            try:
                credential = presented_credential(request)
            except Unauthenticated as error:
                failures.failed(remote)
                return error_response(401, "UNAUTHORIZED", error.message)
        try:
            issued = await run_in_threadpool(issue, credential)
        except Unauthenticated as error:
            failures.failed(remote)
            return error_response(401, "UNAUTHORIZED", error.message)
        except Forbidden as error:
            return domain_error_response(error)
        body: dict[str, Any] = {
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": issued.expires_in,
            "issued_at": issued.issued_at.isoformat().replace("+00:00", "Z"),
        }
        scope = request.query_params.get("scope")
        if scope:
            body["scope"] = scope
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def other(request: Request) -> Response:
        if request.method not in PULL_METHODS:
            return unsupported(request)
        return error_response(404, "UNSUPPORTED", f"no such endpoint {request.url.path}")

    for endpoint in (version_check, catalog, manifest, blob, tags, referrers):
        endpoint.actions = dict.fromkeys(PULL_METHODS, PULL_ACTION)  # type: ignore[attr-defined]
    public(token)
    public(other)
    return [
        Route("/v2/", version_check, methods=EVERY_METHOD),
        Route("/v2/_catalog", catalog, methods=EVERY_METHOD),
        Route("/v2/{name:path}/manifests/{reference}", manifest, methods=EVERY_METHOD),
        Route("/v2/{name:path}/blobs/{digest}", blob, methods=EVERY_METHOD),
        Route("/v2/{name:path}/tags/list", tags, methods=EVERY_METHOD),
        Route("/v2/{name:path}/referrers/{digest}", referrers, methods=EVERY_METHOD),
        Route("/token", token, methods=["GET", "POST"]),
        Route("/{rest:path}", other, methods=EVERY_METHOD),
    ]


def unsupported(request: Request) -> Response:
    return error_response(
        405,
        "UNSUPPORTED",
        f"{request.method} is not supported: this registry only serves pulls",
        _detail(request),
        {"Allow": "GET, HEAD"},
    )


async def _token_form(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_TOKEN_FORM_BYTES:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}
