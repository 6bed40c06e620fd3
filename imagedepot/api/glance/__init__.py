"""The OpenStack Glance v2 dialect. Each module owns one concern: `errors` (Glance's error
body), `schemas` (the versions, schemas and import-info documents), `queries` (a list's
filters, sorts and page links), `images` (the image routes, data included), `members`
(sharing an image with other projects) and `openapi` (the OpenAPI document of all of them).
This module lists every route of the dialect (`routes`) and re-exports what the app uses."""

from __future__ import annotations

from starlette.routing import Route

from imagedepot.api.context import ApiContext
from imagedepot.api.glance.errors import error_response
from imagedepot.api.glance.images import image_routes
from imagedepot.api.glance.members import member_routes
from imagedepot.api.glance.openapi import OPENAPI_PATH, openapi_document
from imagedepot.api.glance.schemas import schema_routes
from imagedepot.api.openapi import document_route

__all__ = ["error_response", "routes"]


def routes(context: ApiContext) -> list[Route]:
    """Every route of the dialect, in the order the app mounts them."""
    return [
        *schema_routes(),
        document_route(OPENAPI_PATH, openapi_document()),
        *image_routes(context),
        *member_routes(context),
    ]
