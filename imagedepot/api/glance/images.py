"""The OpenStack Glance v2 image routes (`/v2/images…`), with the seed's Nova-style list extras,
as openstacksdk and the seed `003` expect: rendering an image, create and the two json-patch
dialects of update, tags and (de)activation, and the image data, which streams in and out and
is never held whole.

Images are flat JSON with extra properties as strings; lists carry `first`, `next` and
`schema`, and each item the seed's `links`. The error body is in `errors`, the public
documents in `schemas`, and the list's query string in `queries`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imagedepot.api.blob_responses import blob_response
from imagedepot.api.context import ApiContext
from imagedepot.api.glance.errors import UnsupportedMediaType, error_response, render_error
from imagedepot.api.glance.queries import page_link, parse_integer, parse_query
from imagedepot.api.wire import json_body, json_object, stream_body, utc_timestamp
from imagedepot.domain.errors import Conflict, InvalidInput, NotFound
from imagedepot.domain.identity import Principal
from imagedepot.domain.vmimages import SETTABLE_FIELDS, VmImage
from imagedepot.services.vmimages import (
    DECLARED_SIZE,
    IMPORT_METHODS,
)

PATCH_V21 = "application/openstack-images-v2.1-json-patch"
PATCH_V20 = "application/openstack-images-v2.0-json-patch"
IMAGE_ALTERNATE_TYPE = "application/vnd.openstack.image"


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
            "created_at": utc_timestamp(image.created_at),
            "updated_at": utc_timestamp(image.updated_at),
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


# --- create and patch -------------------------------------------------------------------------


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
    return parse_integer("X-OpenStack-Image-Size", text.strip())


def image_routes(context: ApiContext) -> list[Route]:
    service = context.required_vm_images()

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
            "first": page_link(request, None),
            "schema": "/v2/schemas/images",
        }
        if page and len(page) == query.limit:
            body["next"] = page_link(request, page[-1].id)
        return JSONResponse(body)

    def create_image(_: Request, raw: bytes, principal: Principal) -> Response:
        image = service.create(principal, json_object(raw, allow_empty=True))
        headers = {
            "Location": f"/v2/images/{image.id}",
            # openstacksdk reads the import methods from here before staging data.
            "OpenStack-image-import-methods": ",".join(IMPORT_METHODS),
        }
        return JSONResponse(image_body(image), status_code=201, headers=headers)

    def import_image(request: Request, raw: bytes, principal: Principal) -> Response:
        body = json_body(raw, allow_empty=True)
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
            await stream_body(request, started.write)
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
        if data.source is None or data.image.blob_digest is None:
            return Response(status_code=204)
        headers = {"Content-MD5": data.image.checksum or ""}
        try:
            return await blob_response(
                request, data.source, data.image.blob_digest, data.size, headers
            )
        except FileNotFoundError:
            raise NotFound(f"the data of image {data.image.id} is missing") from None

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
        Route("/v2/images", gate.route(collection, render_error), methods=list(collection)),
        Route("/v2/images/{image_id}", gate.route(item, render_error), methods=list(item)),
        Route(
            "/v2/images/{image_id}/file",
            gate.streaming_route(data_routes, render_error),
            methods=list(data_routes),
        ),
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
