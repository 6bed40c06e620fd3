"""The web console under `/ui/` on the API port: server-rendered pages over the same services
and the same permission checks as the dialects, for operators and project users.

Everything it serves is inside the package (templates, one stylesheet, one script of our
own): nothing is fetched at run time and nothing is built, so an air-gapped site runs it as
shipped.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from imagedepot.api.auth import public
from imagedepot.api.context import ApiContext
from imagedepot.api.ui.admin import admin_routes
from imagedepot.api.ui.caches import cache_routes
from imagedepot.api.ui.door import ConsoleDoor, message_page
from imagedepot.api.ui.images import image_routes
from imagedepot.api.ui.render import SECURITY_HEADERS
from imagedepot.api.ui.signin import signin_routes


class _Static(StaticFiles):
    """The console's own files, with the console's security headers."""

    async def get_response(self, path: str, scope):  # type: ignore[no-untyped-def]
        response = await super().get_response(path, scope)
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response


def routes(context: ApiContext) -> list[BaseRoute]:
    """The console's routes, mounted at `/ui`; none when the context has no console."""
    if context.console is None:
        return []
    door = ConsoleDoor(context.gate, context.console)
    static = _Static(packages=[("imagedepot.api.ui", "static")])
    public(static)  # type: ignore[arg-type]
    console: list[BaseRoute] = [
        *signin_routes(door),
        *cache_routes(door, context.caches),
        *admin_routes(door, context.inventory, context.registry_endpoint),
        *(image_routes(door, context.vm_images) if context.vm_images else []),
        Mount("/static", app=static, name="console-static"),
    ]
    return [Mount("/ui", routes=console)]


__all__ = ["message_page", "routes"]
