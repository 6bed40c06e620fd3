"""Signing in and out of the console: a token (and, for the admin token, a project) traded for
a session cookie that is HttpOnly, SameSite=Strict, limited to `/ui`, and Secure under TLS."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from imagedepot.api.auth import public
from imagedepot.api.errors import finish, http_status
from imagedepot.api.ui.door import (
    COOKIE,
    SIGN_IN,
    ConsoleDoor,
    RefusedChange,
    Viewer,
    form_of,
    same_origin,
)
from imagedepot.api.ui.render import page, secure
from imagedepot.api.wire import client_host
from imagedepot.domain.errors import DomainError, Unauthenticated
from imagedepot.services.console_sessions import SESSION_LIFETIME

HOME = "/ui/caches"


def signin_routes(door: ConsoleDoor) -> list[Route]:
    @public
    async def signin_form(request: Request) -> Response:
        return page(request, "signin.html", {"viewer": None, "error": None})

    @public
    async def signin(request: Request) -> Response:
        remote = client_host(request)
        try:
            door.gate.auth_failures.check(remote)
            if not same_origin(request):
                raise RefusedChange("refused: the sign-in form comes from another site")
            form = await form_of(request)
            token, project = str(form.get("token", "")), str(form.get("project", ""))
            try:
                signed = await run_in_threadpool(door.sessions.sign_in, token, project or None)
            except Unauthenticated:
                door.gate.auth_failures.failed(remote)
                raise
        except DomainError as error:
            # 403 for another site's form, 429 (with Retry-After) when slowed down: not all 401
            values = {"viewer": None, "error": error}
            return finish(page(request, "signin.html", values, status=http_status(error)), error)
        response = secure(RedirectResponse(HOME, status_code=303))
        response.set_cookie(
            COOKIE,
            signed.secret,
            max_age=int(SESSION_LIFETIME.total_seconds()),
            path="/ui",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    async def signout(request: Request, _: Viewer) -> Response:
        await run_in_threadpool(door.sessions.sign_out, request.cookies.get(COOKIE))
        response = secure(RedirectResponse(SIGN_IN, status_code=303))
        response.delete_cookie(COOKIE, path="/ui")
        return response

    @public
    async def home(_: Request) -> Response:
        return secure(RedirectResponse(HOME, status_code=303))

    return [
        Route("/", home, methods=["GET"]),
        Route("/signin", signin_form, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route(
            "/signout",
            door.page({"POST": ("console:session:delete", signout)}, anyone_signed_in=True),
            methods=["POST"],
        ),
    ]
