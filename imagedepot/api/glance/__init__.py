"""The OpenStack Glance v2 dialect: images (`images.py`) and their members (`members.py`)."""

from __future__ import annotations

from starlette.routing import Route

from imagedepot.api.context import ApiContext
from imagedepot.api.glance.images import error_response
from imagedepot.api.glance.images import routes as image_routes
from imagedepot.api.glance.members import member_routes

__all__ = ["error_response", "routes"]


def routes(context: ApiContext) -> list[Route]:
    return [*image_routes(context), *member_routes(context)]
