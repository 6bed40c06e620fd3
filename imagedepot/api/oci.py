"""The OCI Distribution API on the registry port (read side).

For now only the version check `GET /v2/` answers; serving what the caches hold
is the registry-port issue's work.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def version_check(_: Request) -> Response:
    return JSONResponse({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})


def routes() -> list[Route]:
    return [Route("/v2/", version_check, methods=["GET", "HEAD"])]
