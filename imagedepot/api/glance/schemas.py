"""The documents Glance serves to anyone, before any image is touched: the version list (`/`
and `/versions`), the JSON schemas of an image and of an image list (`/v2/schemas/…`), and the
import methods (`/v2/info/import`). They are static descriptions of the API, so they live apart
from the routes that act on images.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imagedepot.api.auth import public
from imagedepot.domain.vmimages import CONTAINER_FORMATS, DISK_FORMATS, ImageStatus, Visibility
from imagedepot.services.vmimages import IMPORT_METHODS

API_VERSION = "v2.17"
SUPPORTED_VERSIONS = ("v2.16", "v2.15", "v2.9", "v2.7", "v2.6", "v2.5", "v2.4", "v2.3", "v2.2")


def versions_document(request: Request) -> dict[str, Any]:
    href = str(request.base_url).rstrip("/") + "/v2/"
    entries = [{"id": API_VERSION, "status": "CURRENT"}]
    entries += [{"id": version, "status": "SUPPORTED"} for version in SUPPORTED_VERSIONS]
    return {"versions": [{**entry, "links": [{"rel": "self", "href": href}]} for entry in entries]}


@public
async def root_versions(request: Request) -> Response:
    return JSONResponse(versions_document(request), status_code=300)


@public
async def versions(request: Request) -> Response:
    return JSONResponse(versions_document(request))


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


IMAGE_SCHEMA: dict[str, Any] = {
    "name": "image",
    "type": "object",
    "additionalProperties": {"type": "string"},
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9a-f-]{36}$", "description": "image UUID"},
        "name": _nullable("string", maxLength=255),
        "status": {"type": "string", "readOnly": True, "enum": [s.value for s in ImageStatus]},
        "visibility": {"type": "string", "enum": [v.value for v in Visibility]},
        "protected": {"type": "boolean"},
        "os_hidden": {"type": "boolean"},
        "checksum": _nullable("string", readOnly=True, maxLength=32),
        "os_hash_algo": _nullable("string", readOnly=True, maxLength=64),
        "os_hash_value": _nullable("string", readOnly=True, maxLength=128),
        "owner": _nullable("string", readOnly=True, maxLength=255),
        "size": _nullable("integer", readOnly=True),
        "virtual_size": _nullable("integer", readOnly=True),
        "min_ram": {"type": "integer", "minimum": 0},
        "min_disk": {"type": "integer", "minimum": 0},
        "disk_format": _nullable("string", enum=[None, *DISK_FORMATS]),
        "container_format": _nullable("string", enum=[None, *CONTAINER_FORMATS]),
        "created_at": {"type": "string", "readOnly": True, "format": "date-time"},
        "updated_at": {"type": "string", "readOnly": True, "format": "date-time"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}},
        "self": {"type": "string", "readOnly": True},
        "file": {"type": "string", "readOnly": True},
        "schema": {"type": "string", "readOnly": True},
    },
    "links": [
        {"rel": "self", "href": "{self}"},
        {"rel": "enclosure", "href": "{file}"},
        {"rel": "describedby", "href": "{schema}"},
    ],
}

IMAGES_SCHEMA: dict[str, Any] = {
    "name": "images",
    "type": "object",
    "properties": {
        "images": {"type": "array", "items": IMAGE_SCHEMA},
        "schema": {"type": "string"},
        "first": {"type": "string"},
        "next": {"type": "string"},
    },
    "links": [
        {"rel": "first", "href": "{first}"},
        {"rel": "next", "href": "{next}"},
        {"rel": "describedby", "href": "{schema}"},
    ],
}


@public
async def import_info(_: Request) -> Response:
    return JSONResponse(
        {
            "import-methods": {
                "description": "Import methods available.",
                "type": "array",
                "value": list(IMPORT_METHODS),
            }
        }
    )


@public
async def image_schema(_: Request) -> Response:
    return JSONResponse(IMAGE_SCHEMA)


@public
async def images_schema(_: Request) -> Response:
    return JSONResponse(IMAGES_SCHEMA)


def schema_routes() -> list[Route]:
    """The public routes: versions, the image schemas and the import information."""
    return [
        Route("/", root_versions, methods=["GET"]),
        Route("/versions", versions, methods=["GET"]),
        Route("/v2/schemas/image", image_schema, methods=["GET"]),
        Route("/v2/schemas/images", images_schema, methods=["GET"]),
        Route("/v2/info/import", import_info, methods=["GET"]),
    ]
