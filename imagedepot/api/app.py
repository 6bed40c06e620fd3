"""The ASGI applications: the API port (every dialect) and the registry port, both with
`/healthz` (the process answers) and `/readyz` (its database and blob store answer too), for
load balancers.

Unknown paths on the API port answer JSON, never HTML, since every client here
parses error bodies. So does an unhandled error: a 500 in the body of the dialect its path
belongs to, with the `X-Request-Id` its log line names and `Connection: close`, because the
server closes the connection after it (a pooled client must not reuse it).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagedepot.api import cce, didi, didi_openapi, glance, k8s, oci, ui
from imagedepot.api.auth import public
from imagedepot.api.context import ApiContext, Readiness, RegistryContext
from imagedepot.api.metrics import metrics_routes
from imagedepot.ports import StoreUnavailable

log = logging.getLogger(__name__)


class RequestIdMiddleware:
    """Every response carries `X-Request-Id` (CCE clients read it from errors)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


@public
async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


def health_routes(readiness: Readiness | None) -> list[Route]:
    @public
    async def readyz(_: Request) -> Response:
        problem = None if readiness is None else await run_in_threadpool(readiness)
        if problem is not None:
            return JSONResponse({"status": "unready", "reason": problem}, status_code=503)
        return JSONResponse({"status": "ready"})

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]


INTERNAL_ERROR_MESSAGE = "internal error; see the server log"


def dialect_error(request: Request, status: int, message: str) -> Response:
    """An error in the body of the dialect the request's path belongs to."""
    path = request.url.path
    if k8s.is_k8s_path(path):
        return k8s.http_error(status, message)
    if path.startswith("/v2/"):
        return glance.error_response(status, message)
    if path == "/ui" or path.startswith("/ui/"):
        return ui.message_page(request, status, message)
    if path.startswith("/dicloud/"):
        body = json.loads(bytes(didi.envelope(None, errno=1, errmsg=message).body))
        body["requestId"] = getattr(request.state, "request_id", "")
        return JSONResponse(body, status_code=status)
    return cce.error_response(status, message)


async def http_error(request: Request, error: Exception) -> Response:
    """Routing's own refusals (no such path, a method the path does not answer) in the
    dialect's body, with the headers they carry (`Allow` on a 405)."""
    assert isinstance(error, HTTPException)
    response = dialect_error(request, error.status_code, str(error.detail))
    response.headers.update(error.headers or {})
    return response


ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


def internal_error_handler(render: Callable[[Request], Response]) -> ErrorHandler:
    """The handler for what no endpoint caught. It runs in Starlette's ServerErrorMiddleware,
    outside RequestIdMiddleware, so it adds the request's id itself; that middleware then
    re-raises and uvicorn closes the connection, which `Connection: close` announces."""

    async def internal_error(request: Request, error: Exception) -> Response:
        request_id = getattr(request.state, "request_id", None) or uuid.uuid4().hex
        log.error(
            "unhandled error answering %s %s (request %s)",
            request.method,
            request.url.path,
            request_id,
            exc_info=error,
        )
        response = render(request)
        response.headers["X-Request-Id"] = request_id
        response.headers["Connection"] = "close"
        return response

    return internal_error


STORE_UNAVAILABLE_MESSAGE = "the database is not answering; retry shortly"


def store_unavailable_handler(render: Callable[[Request], Response]) -> ErrorHandler:
    """The database is away (a restart, a failover): 503 to be retried, with one log line
    rather than a traceback per request."""

    async def store_unavailable(request: Request, error: Exception) -> Response:
        log.warning("answering %s %s with 503: %s", request.method, request.url.path, error)
        response = render(request)
        response.headers["Retry-After"] = "1"
        return response

    return store_unavailable


internal_error = internal_error_handler(
    lambda request: dialect_error(request, 500, INTERNAL_ERROR_MESSAGE)
)


async def registry_http_error(_: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return oci.http_error_response(error.status_code, str(error.detail), error.headers)


def api_app(context: ApiContext) -> Starlette:
    routes: list[BaseRoute] = [
        *health_routes(context.readiness),
        *cce.routes(context),
        *k8s.routes(context),
    ]
    if context.vm_images is not None:
        routes += [*glance.routes(context), *didi.routes(context)]
        routes.append(didi_openapi.openapi_route(context.vm_images.regions))
    if context.metrics is not None and context.inventory is not None:
        routes += metrics_routes(context.metrics, context.inventory)
    routes += ui.routes(context)
    app = Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: http_error,
            StoreUnavailable: store_unavailable_handler(
                lambda request: dialect_error(request, 503, STORE_UNAVAILABLE_MESSAGE)
            ),
            Exception: internal_error,
        },
    )
    app.add_middleware(RequestIdMiddleware)
    return app


def registry_app(context: RegistryContext) -> Starlette:
    app = Starlette(
        routes=[*health_routes(context.readiness), *oci.routes(context)],
        exception_handlers={
            HTTPException: registry_http_error,
            StoreUnavailable: store_unavailable_handler(
                lambda _: oci.error_response(503, "UNAVAILABLE", STORE_UNAVAILABLE_MESSAGE)
            ),
            Exception: internal_error_handler(lambda _: oci.internal_error_response()),
        },
    )
    app.add_middleware(RequestIdMiddleware)
    return app
