"""The OpenStack Glance v2 dialect (`/`, `/versions`, `/v2/images…`, `/v2/schemas/…`), with the
seed's Nova-style list extras, as openstacksdk and the seed `003` expect.

Images are flat JSON with extra properties as strings; lists carry `first`, `next` and
`schema`, and each item the seed's `links`. Errors are `{"error":{"code","title","message"}}`,
which the OpenStack clients parse. Image data streams in and out; it is never held whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from imagedepot.api.auth import public
from imagedepot.api.context import ApiContext
from imagedepot.api.errors import finish, http_status
from imagedepot.domain.errors import (
    Conflict,
    DomainError,
    InvalidInput,
    QuotaExceeded,
)
from imagedepot.domain.identity import Principal
from imagedepot.domain.sharing import MemberStatus
from imagedepot.domain.vmimages import (
    COMPARISONS,
    CONTAINER_FORMATS,
    DISK_FORMATS,
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    SETTABLE_FIELDS,
    SORT_KEYS,
    ImageQuery,
    ImageStatus,
    ImageType,
    SortKey,
    TimeFilter,
    Visibility,
    VmImage,
)
from imagedepot.services.vmimages import (
    DECLARED_SIZE,
    IMPORT_METHODS,
    ImageUpload,
    VmImageService,
)

API_VERSION = "v2.17"
SUPPORTED_VERSIONS = ("v2.16", "v2.15", "v2.9", "v2.7", "v2.6", "v2.5", "v2.4", "v2.3", "v2.2")
PATCH_V21 = "application/openstack-images-v2.1-json-patch"
PATCH_V20 = "application/openstack-images-v2.0-json-patch"
IMAGE_ALTERNATE_TYPE = "application/vnd.openstack.image"
UPLOAD_BUFFER = 1 << 20


class UnsupportedMediaType(DomainError):
    """The request body's Content-Type is not one this call accepts (HTTP 415)."""


_STATUS_OVERRIDES: list[tuple[type[DomainError], int]] = [
    (UnsupportedMediaType, 415),
    (QuotaExceeded, 413),
]
"""Glance answers an over-quota upload 413, and a wrong PATCH media type 415."""


def error_response(status: int, message: str) -> JSONResponse:
    title = HTTPStatus(status).phrase
    return JSONResponse(
        {"error": {"code": status, "title": title, "message": message}}, status_code=status
    )


def render_error(error: DomainError) -> Response:
    status = http_status(error, _STATUS_OVERRIDES)
    return finish(error_response(status, error.message), error)


def timestamp(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_body(image: VmImage) -> dict[str, Any]:
    body: dict[str, Any] = dict(image.properties)
    body.update(
        {
            "id": image.id,
            "name": image.name,
            "status": image.status.value,
            "visibility": image.visibility.value,
            "protected": image.protected,
            "os_hidden": image.os_hidden,
            "checksum": image.checksum,
            "os_hash_algo": image.os_hash_algo,
            "os_hash_value": image.os_hash_value,
            "owner": image.project_id,
            "size": image.size,
            "virtual_size": image.virtual_size,
            "min_ram": image.min_ram,
            "min_disk": image.min_disk,
            "disk_format": image.disk_format,
            "container_format": image.container_format,
            "created_at": timestamp(image.created_at),
            "updated_at": timestamp(image.updated_at),
            "tags": list(image.tags),
            "self": f"/v2/images/{image.id}",
            "file": f"/v2/images/{image.id}/file",
            "schema": "/v2/schemas/image",
        }
    )
    return body


def links(request: Request, image: VmImage) -> list[dict[str, str]]:
    """The seed's (Nova's) links: the versioned URL, the bookmark, and the image service's."""
    base = str(request.base_url).rstrip("/")
    return [
        {"href": f"{base}/v2/images/{image.id}", "rel": "self"},
        {"href": f"{base}/images/{image.id}", "rel": "bookmark"},
        {"href": f"{base}/images/{image.id}", "rel": "alternate", "type": IMAGE_ALTERNATE_TYPE},
    ]


# --- versions and schemas -------------------------------------------------------------------


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


# --- list parameters ------------------------------------------------------------------------

_PAGING_PARAMS = frozenset({"limit", "marker"})
_SORT_PARAMS = frozenset({"sort_key", "sort-key", "sort_dir", "sort-dir", "sort"})
_IN_FILTERS = {
    "id": "ids",
    "name": "names",
    "status": "statuses",
    "disk_format": "disk_formats",
    "container_format": "container_formats",
}
_NAMED_FILTERS = frozenset(
    {
        *_IN_FILTERS,
        "owner",
        "tag",
        "visibility",
        "protected",
        "os_hidden",
        "size_min",
        "size_max",
        "created_at",
        "updated_at",
        "changes-since",
        "changes_since",
        "type",
        "member_status",
    }
)
_TYPES = {
    "snapshot": ImageType.SNAPSHOT,
    "server": ImageType.SNAPSHOT,
    "image": ImageType.IMAGE,
    "base": ImageType.IMAGE,
}


def parse_time(field: str, text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{field}: {text!r} is not an ISO 8601 time", field=field) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _boolean(field: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise InvalidInput(f"{field} must be true or false, got {text!r}", field=field)


def _integer(field: str, text: str, minimum: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidInput(f"{field} must be an integer, got {text!r}", field=field) from None
    if value < minimum:
        raise InvalidInput(f"{field} must be at least {minimum}, got {value}", field=field)
    return value


def parse_sort(params: list[tuple[str, str]]) -> tuple[SortKey, ...]:
    keys = [v for k, v in params if k in ("sort_key", "sort-key")]
    dirs = [v for k, v in params if k in ("sort_dir", "sort-dir")]
    combined = [v for k, v in params if k == "sort"]
    if combined and (keys or dirs):
        raise InvalidInput("sort cannot be combined with sort_key / sort_dir", field="sort")
    pairs: list[tuple[str, str]] = []
    if combined:
        for entry in ",".join(combined).split(","):
            key, _, direction = entry.strip().partition(":")
            pairs.append((key, direction or "desc"))
    elif keys:
        if len(dirs) > 1 and len(dirs) != len(keys):
            raise InvalidInput("give one sort_dir, or one per sort_key", field="sort_dir")
        pairs = [
            (key, dirs[0] if len(dirs) == 1 else (dirs[i] if dirs else "desc"))
            for i, key in enumerate(keys)
        ]
    elif dirs:
        if len(dirs) > 1:
            raise InvalidInput("sort_dir without sort_key", field="sort_dir")
        pairs = [("created_at", dirs[0])]
    else:
        return (SortKey("created_at", True),)
    result: list[SortKey] = []
    for key, direction in pairs:
        if key not in SORT_KEYS:
            raise InvalidInput(
                f"sort key {key!r} is not one of {', '.join(SORT_KEYS)}", field="sort_key"
            )
        if direction not in ("asc", "desc"):
            raise InvalidInput(
                f"sort direction {direction!r} must be asc or desc", field="sort_dir"
            )
        result.append(SortKey(key, direction == "desc"))
    return tuple(result)


def _split_in(field: str, text: str) -> tuple[str, ...]:
    if text.startswith("in:"):
        values = tuple(part for part in text[3:].split(",") if part)
        if not values:
            raise InvalidInput(f"{field}: 'in:' needs at least one value", field=field)
        return values
    return (text,)


def parse_query(request: Request, project_id: str) -> ImageQuery:
    params = request.query_params.multi_items()
    fields: dict[str, Any] = {
        "project_id": project_id,
        "sort": parse_sort(params),
        "include_visible": True,
    }
    tags: list[str] = []
    properties: list[tuple[str, str]] = []
    times: list[TimeFilter] = []
    in_values: dict[str, list[str]] = {}
    for key, value in params:
        if key in _SORT_PARAMS:
            continue
        if key == "limit":
            fields["limit"] = min(_integer("limit", value), LIST_LIMIT_MAX)
        elif key == "marker":
            fields["marker"] = value
        elif key in _IN_FILTERS:
            in_values.setdefault(key, []).extend(_split_in(key, value))
        elif key == "owner":
            fields["owner"] = value
        elif key == "tag":
            tags.append(value)
        elif key == "visibility":
            if value not in ("all", *[v.value for v in Visibility]):
                raise InvalidInput(f"visibility {value!r} is not valid", field="visibility")
            fields["visibility"] = value
        elif key in ("protected", "os_hidden"):
            fields[key] = _boolean(key, value)
        elif key in ("size_min", "size_max"):
            fields[key] = _integer(key, value)
        elif key in ("created_at", "updated_at"):
            operator, _, moment = value.partition(":")
            if operator not in COMPARISONS or not moment:
                raise InvalidInput(
                    f"{key} must be OPERATOR:TIME with OPERATOR one of {', '.join(COMPARISONS)}",
                    field=key,
                )
            times.append(TimeFilter(key, operator, parse_time(key, moment)))
        elif key in ("changes-since", "changes_since"):
            fields["changes_since"] = parse_time(key, value)
        elif key == "type":
            lowered = value.lower()
            if lowered != "all" and lowered not in _TYPES:
                raise InvalidInput(f"type {value!r} must be snapshot, image or all", field="type")
            fields["image_type"] = _TYPES.get(lowered)
        elif key == "member_status":
            if value not in ("all", *[status.value for status in MemberStatus]):
                raise InvalidInput(
                    f"member_status must be pending, accepted, rejected or all, got {value!r}",
                    field="member_status",
                )
            fields["member_status"] = value
        else:
            properties.append((key, value))
    statuses = in_values.get("status", [])
    for status in statuses:
        if status not in [s.value for s in ImageStatus]:
            raise InvalidInput(f"status {status!r} is not an image status", field="status")
    for key, target in _IN_FILTERS.items():
        if key in in_values:
            fields[target] = tuple(in_values[key])
    fields["tags"] = tuple(tags)
    fields["properties"] = tuple(properties)
    fields["times"] = tuple(times)
    fields.setdefault("limit", LIST_LIMIT_DEFAULT)
    return ImageQuery(**fields)


def _page_link(request: Request, marker: str | None) -> str:
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
    if marker is not None:
        kept.append(("marker", marker))
    return "/v2/images" + (f"?{urlencode(kept)}" if kept else "")


# --- create and patch -------------------------------------------------------------------------


def json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInput(f"request body is not valid JSON: {error}") from None


def parse_create(raw: bytes) -> dict[str, object]:
    body = json_body(raw) if raw.strip() else {}
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    return body


def _pointer(path: object) -> str:
    if not isinstance(path, str) or not path.startswith("/") or path.count("/") != 1:
        raise InvalidInput(f"path {path!r} must be a JSON pointer like /name", field="path")
    return path[1:].replace("~1", "/").replace("~0", "~")


def parse_patch(raw: bytes, media_type: str) -> list[tuple[str, str, object]]:
    """(operation, attribute, value) triples from either json-patch dialect of Glance."""
    body = json_body(raw)
    if not isinstance(body, list):
        raise InvalidInput("a json-patch body must be an array of operations")
    operations: list[tuple[str, str, object]] = []
    for index, entry in enumerate(body):
        if not isinstance(entry, dict):
            raise InvalidInput(f"operation {index} must be an object", field=f"[{index}]")
        if media_type == PATCH_V21:
            op = entry.get("op")
            path = entry.get("path")
        else:
            found = [name for name in ("add", "replace", "remove") if name in entry]
            if len(found) != 1:
                raise InvalidInput(
                    f"operation {index} must name one of add, replace, remove", field=f"[{index}]"
                )
            op, path = found[0], entry[found[0]]
        if op not in ("add", "replace", "remove"):
            raise InvalidInput(f"operation {index}: op {op!r} is not supported", field="op")
        if op != "remove" and "value" not in entry:
            raise InvalidInput(f"operation {index}: value is required", field="value")
        operations.append((str(op), _pointer(path), entry.get("value")))
    return operations


def apply_patch(image: VmImage, operations: list[tuple[str, str, object]]) -> None:
    for op, attribute, value in operations:
        if op == "remove":
            image.remove_attribute(attribute)
            continue
        if (
            op == "replace"
            and attribute not in SETTABLE_FIELDS
            and attribute not in image.properties
            and attribute not in ("id", "owner")
        ):
            raise Conflict(f"property {attribute!r} does not exist", field=attribute)
        image.set_attribute(attribute, value)


# --- routes -----------------------------------------------------------------------------------


def _declared_size(request: Request) -> int | None:
    text = request.headers.get("x-openstack-image-size")
    if text is None:
        return None
    return _integer("X-OpenStack-Image-Size", text.strip())


async def _stream_into(upload: ImageUpload, request: Request) -> None:
    """Hand the body to the upload in blocks of about a MiB, each written in a thread."""
    buffer = bytearray()
    async for chunk in request.stream():
        buffer += chunk
        if len(buffer) >= UPLOAD_BUFFER:
            block = bytes(buffer)
            buffer.clear()
            await run_in_threadpool(upload.write, block)
    if buffer:
        await run_in_threadpool(upload.write, bytes(buffer))


def routes(context: ApiContext) -> list[Route]:
    images = context.vm_images
    assert images is not None
    service: VmImageService = images

    def image_id(request: Request) -> str:
        return str(request.path_params["image_id"])

    def list_images(request: Request, _: bytes, principal: Principal) -> Response:
        query = parse_query(request, principal.project_id)
        page = service.list(query)
        items = []
        for image in page:
            item = image_body(image)
            item["links"] = links(request, image)
            items.append(item)
        body: dict[str, Any] = {
            "images": items,
            "first": _page_link(request, None),
            "schema": "/v2/schemas/images",
        }
        if page and len(page) == query.limit:
            body["next"] = _page_link(request, page[-1].id)
        return JSONResponse(body)

    def create_image(_: Request, raw: bytes, principal: Principal) -> Response:
        image = service.create(principal, parse_create(raw))
        headers = {
            "Location": f"/v2/images/{image.id}",
            # openstacksdk reads the import methods from here before staging data.
            "OpenStack-image-import-methods": ",".join(IMPORT_METHODS),
        }
        return JSONResponse(image_body(image), status_code=201, headers=headers)

    def import_image(request: Request, raw: bytes, principal: Principal) -> Response:
        body = json_body(raw) if raw.strip() else None
        method = body.get("method") if isinstance(body, dict) else None
        service.import_image(principal, image_id(request), method)
        return Response(status_code=202)

    def show_image(request: Request, _: bytes, principal: Principal) -> Response:
        return JSONResponse(image_body(service.get_visible(principal, image_id(request))))

    def patch_image(request: Request, raw: bytes, principal: Principal) -> Response:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in (PATCH_V21, PATCH_V20):
            raise UnsupportedMediaType(
                f"PATCH needs Content-Type {PATCH_V21} (or {PATCH_V20}), got {media_type!r}"
            )
        operations = parse_patch(raw, media_type)
        image = service.change(
            principal, image_id(request), lambda found: apply_patch(found, operations)
        )
        return JSONResponse(image_body(image))

    def delete_image(request: Request, _: bytes, principal: Principal) -> Response:
        service.delete(principal, image_id(request))
        return Response(status_code=204)

    def action(change: Callable[[Principal, str], VmImage]) -> Callable[..., Response]:
        def handler(request: Request, _: bytes, principal: Principal) -> Response:
            change(principal, image_id(request))
            return Response(status_code=204)

        return handler

    def add_tag(request: Request, _: bytes, principal: Principal) -> Response:
        service.add_tag(principal, image_id(request), str(request.path_params["tag"]))
        return Response(status_code=204)

    def delete_tag(request: Request, _: bytes, principal: Principal) -> Response:
        service.remove_tag(principal, image_id(request), str(request.path_params["tag"]))
        return Response(status_code=204)

    async def upload(request: Request, principal: Principal) -> Response:
        return await receive_data(request, principal, stage=False)

    async def stage(request: Request, principal: Principal) -> Response:
        return await receive_data(request, principal, stage=True)

    async def receive_data(request: Request, principal: Principal, *, stage: bool) -> Response:
        media_type = request.headers.get("content-type", "application/octet-stream")
        if media_type.split(";")[0].strip().lower() != "application/octet-stream":
            raise UnsupportedMediaType(
                f"image data must be sent as application/octet-stream, got {media_type!r}"
            )
        declared = _declared_size(request)
        started = await run_in_threadpool(
            lambda: service.begin_upload(principal, image_id(request), declared, stage=stage)
        )
        try:
            await _stream_into(started, request)
            await run_in_threadpool(started.finish)
        except ClientDisconnect:
            await run_in_threadpool(started.abort)
            return error_response(400, "the client went away before the upload finished")
        except InvalidInput as error:
            await run_in_threadpool(started.abort)
            if error.field != DECLARED_SIZE:
                raise
            raise InvalidInput(
                f"X-OpenStack-Image-Size: {error.message}", field="X-OpenStack-Image-Size"
            ) from None
        except BaseException:
            await run_in_threadpool(started.abort)
            raise
        return Response(status_code=204)

    async def download(request: Request, principal: Principal) -> Response:
        data = await run_in_threadpool(service.data, principal, image_id(request))
        if data.path is None:
            return Response(status_code=204)
        headers = {"Content-MD5": data.image.checksum or ""}
        return FileResponse(data.path, headers=headers, media_type="application/octet-stream")

    gate = context.gate
    collection = {
        "GET": ("ims:image:list", list_images),
        "POST": ("ims:image:create", create_image),
    }
    item = {
        "GET": ("ims:image:get", show_image),
        "PATCH": ("ims:image:update", patch_image),
        "DELETE": ("ims:image:delete", delete_image),
    }
    data_routes = {
        "GET": ("ims:image:download", download),
        "PUT": ("ims:image:upload", upload),
    }
    staging = {"PUT": ("ims:image:upload", stage)}
    importing = {"POST": ("ims:image:import", import_image)}
    deactivate = {"POST": ("ims:image:update", action(service.deactivate))}
    reactivate = {"POST": ("ims:image:update", action(service.reactivate))}
    tags = {"PUT": ("ims:image:update", add_tag), "DELETE": ("ims:image:update", delete_tag)}
    return [
        Route("/", root_versions, methods=["GET"]),
        Route("/versions", versions, methods=["GET"]),
        Route("/v2/schemas/image", image_schema, methods=["GET"]),
        Route("/v2/schemas/images", images_schema, methods=["GET"]),
        Route("/v2/images", gate.route(collection, render_error), methods=list(collection)),
        Route("/v2/images/{image_id}", gate.route(item, render_error), methods=list(item)),
        Route(
            "/v2/images/{image_id}/file",
            gate.streaming_route(data_routes, render_error),
            methods=list(data_routes),
        ),
        Route("/v2/info/import", import_info, methods=["GET"]),
        Route(
            "/v2/images/{image_id}/stage",
            gate.streaming_route(staging, render_error),
            methods=["PUT"],
        ),
        Route(
            "/v2/images/{image_id}/import", gate.route(importing, render_error), methods=["POST"]
        ),
        Route(
            "/v2/images/{image_id}/actions/deactivate",
            gate.route(deactivate, render_error),
            methods=["POST"],
        ),
        Route(
            "/v2/images/{image_id}/actions/reactivate",
            gate.route(reactivate, render_error),
            methods=["POST"],
        ),
        Route(
            "/v2/images/{image_id}/tags/{tag}", gate.route(tags, render_error), methods=list(tags)
        ),
    ]
