"""The console's VM image pages: the Glance images a project sees (its own, and those shared
with it or public), one image in detail, uploads from the browser, downloads, (de)activation
and deletion, all through the same `VmImageService` calls and action names as Glance's
`/v2/images` routes.

An upload is two requests from console.js: a create (JSON or a form) that answers the new
image's id, then a `PUT` of the file's bytes, which stream through the same `ImageUpload` as
Glance's `PUT /v2/images/{id}/file` (hashed, checked against the disk format, stored once) and
are never held whole. Requests a script makes get JSON errors it can show; forms get pages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from imagedepot.api.blob_responses import blob_response
from imagedepot.api.errors import http_status
from imagedepot.api.ui.door import MAX_FORM_BYTES, ConsoleDoor, Viewer, form_of
from imagedepot.api.ui.render import page, secure
from imagedepot.api.wire import json_object, stream_body, utc_timestamp
from imagedepot.domain.errors import Conflict, DomainError, InvalidInput, NotFound
from imagedepot.domain.vmimages import NAME_MAX, ImageQuery, ImageStatus, VmImage
from imagedepot.services.vmimages import DECLARED_SIZE, VmImageService

LIST = "/ui/images"
PAGE_SIZE = 50
UPLOAD_DISK_FORMATS = ("raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso")
UPLOAD_CONTAINER_FORMATS = ("bare",)
IMAGE_TYPES = ("image", "snapshot")
_UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")

# The actions Glance's routes declare for the same calls (api/glance/images.py).
LIST_ACTION = "ims:image:list"
GET_ACTION = "ims:image:get"
CREATE_ACTION = "ims:image:create"
UPLOAD_ACTION = "ims:image:upload"
DOWNLOAD_ACTION = "ims:image:download"
UPDATE_ACTION = "ims:image:update"
DELETE_ACTION = "ims:image:delete"


def image_view(image: VmImage, owner_name: str, own: bool) -> dict[str, Any]:
    """What the pages show of an image; `own` when the viewer's project may change it."""
    return {
        "id": image.id,
        "name": image.name or "",
        "type": image.image_type.value,
        "status": image.status.value,
        "size": image.size,
        "virtual_size": image.virtual_size,
        "disk_format": image.disk_format or "",
        "container_format": image.container_format or "",
        "visibility": image.visibility.value,
        "protected": image.protected,
        "owner_id": image.project_id,
        "owner": owner_name,
        "own": own,
        "checksum": image.checksum,
        "os_hash_algo": image.os_hash_algo,
        "os_hash_value": image.os_hash_value,
        "min_disk": image.min_disk,
        "min_ram": image.min_ram,
        "tags": list(image.tags),
        "properties": dict(sorted(image.properties.items())),
        "created_at": utc_timestamp(image.created_at),
        "updated_at": utc_timestamp(image.updated_at),
        "downloadable": image.status is ImageStatus.ACTIVE,
        "can_deactivate": own and image.status is ImageStatus.ACTIVE,
        "can_reactivate": own and image.status is ImageStatus.DEACTIVATED,
        "can_delete": own and not image.protected,
    }


def attributes_from(fields: Mapping[str, Any]) -> dict[str, object]:
    """Glance create attributes from the upload form's fields; InvalidInput names the field."""
    name = str(fields.get("name", "")).strip()
    if not name:
        raise InvalidInput("name: give the image a name", field="name")
    if len(name) > NAME_MAX:
        raise InvalidInput(f"name must be at most {NAME_MAX} characters", field="name")
    disk_format = str(fields.get("disk_format", ""))
    if disk_format not in UPLOAD_DISK_FORMATS:
        raise InvalidInput(
            f"disk_format must be one of {', '.join(UPLOAD_DISK_FORMATS)}; got {disk_format!r}",
            field="disk_format",
        )
    container_format = str(fields.get("container_format", "bare"))
    if container_format not in UPLOAD_CONTAINER_FORMATS:
        raise InvalidInput(
            f"container_format must be {' or '.join(UPLOAD_CONTAINER_FORMATS)}; "
            f"got {container_format!r}",
            field="container_format",
        )
    image_type = str(fields.get("type", "image"))
    if image_type not in IMAGE_TYPES:
        raise InvalidInput(f"type must be image or snapshot; got {image_type!r}", field="type")
    attributes: dict[str, object] = {
        "name": name,
        "disk_format": disk_format,
        "container_format": container_format,
    }
    if image_type == "snapshot":
        attributes["image_type"] = "snapshot"  # Nova's property, as Glance lists it
    return attributes


def download_filename(image: VmImage) -> str:
    """A file name that says what the download is, safe in any file system and header."""
    stem = _UNSAFE_IN_FILENAME.sub("-", image.name or "").strip("-.")[:100] or image.id
    suffix = f".{image.disk_format}" if image.disk_format else ""
    return stem if stem.lower().endswith(suffix) else stem + suffix


def wants_json(request: Request) -> bool:
    """A request from console.js (it asks for JSON), not a form posted by the browser."""
    return "application/json" in request.headers.get("accept", "") or request.headers.get(
        "content-type", ""
    ).startswith("application/json")


def json_error(error: DomainError) -> Response:
    return secure(
        JSONResponse(
            {"error": {"message": error.message, "field": error.field}},
            status_code=http_status(error),
        )
    )


async def _bounded_body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise InvalidInput(f"the request body is over {MAX_FORM_BYTES} bytes")
    return body


def _declared_size(request: Request) -> int | None:
    """The browser states the file's length; an upload longer or shorter is refused."""
    text = request.headers.get("content-length", "").strip()
    return int(text) if text.isascii() and text.isdigit() else None


def image_routes(door: ConsoleDoor, service: VmImageService) -> list[Route]:
    def image_id(request: Request) -> str:
        return str(request.path_params["image_id"])

    def views(viewer: Viewer, images: list[VmImage]) -> list[dict[str, Any]]:
        project = viewer.principal.project_id
        others = {image.project_id for image in images} - {project}
        names = door.gate.identity.project_names(others) if others else {}
        names[project] = viewer.project_name
        return [
            image_view(
                image, names.get(image.project_id, image.project_id), image.project_id == project
            )
            for image in images
        ]

    def listing(viewer: Viewer, marker: str | None) -> tuple[list[dict[str, Any]], str | None]:
        query = ImageQuery(
            project_id=viewer.principal.project_id,
            include_visible=True,
            limit=PAGE_SIZE,
            marker=marker,
        )
        found = service.list(query)
        following = found[-1].id if len(found) == PAGE_SIZE else None
        return views(viewer, found), following

    async def list_page(request: Request, viewer: Viewer) -> Response:
        marker = request.query_params.get("marker") or None
        images, following = await run_in_threadpool(listing, viewer, marker)
        values = {
            "viewer": viewer,
            "images": images,
            "marker": marker,
            "next_marker": following,
            "disk_formats": UPLOAD_DISK_FORMATS,
            "container_formats": UPLOAD_CONTAINER_FORMATS,
            "image_types": IMAGE_TYPES,
        }
        return page(request, "images.html", values)

    async def create(request: Request, viewer: Viewer) -> Response:
        scripted = wants_json(request)
        try:
            if request.headers.get("content-type", "").startswith("application/json"):
                fields: Mapping[str, Any] = json_object(await _bounded_body(request))
            else:
                fields = await form_of(request)
            attributes = attributes_from(fields)
            image = await run_in_threadpool(service.create, viewer.principal, attributes)
        except DomainError as error:
            if scripted:
                return json_error(error)
            raise
        if not scripted:
            return secure(RedirectResponse(LIST, status_code=303))
        body = {
            "image": image_view(image, viewer.project_name, True),
            "upload": f"{LIST}/{image.id}/file",
        }
        return secure(
            JSONResponse(body, status_code=201, headers={"Location": f"{LIST}/{image.id}"})
        )

    async def upload(request: Request, viewer: Viewer) -> Response:
        media_type = request.headers.get("content-type", "application/octet-stream")
        if media_type.split(";")[0].strip().lower() != "application/octet-stream":
            return json_error(
                InvalidInput(
                    f"image data must be sent as application/octet-stream, got {media_type!r}",
                    field="Content-Type",
                )
            )
        declared = _declared_size(request)
        try:
            started = await run_in_threadpool(
                lambda: service.begin_upload(viewer.principal, image_id(request), declared)
            )
        except DomainError as error:
            return json_error(error)
        try:
            await stream_body(request, started.write)
            image = await run_in_threadpool(started.finish)
        except ClientDisconnect:
            await run_in_threadpool(started.abort)
            return json_error(InvalidInput("the browser went away before the upload finished"))
        except DomainError as error:
            await run_in_threadpool(started.abort)
            if error.field == DECLARED_SIZE:
                error = InvalidInput(f"Content-Length: {error.message}", field="Content-Length")
            return json_error(error)
        except BaseException:
            await run_in_threadpool(started.abort)
            raise
        return secure(JSONResponse({"image": image_view(image, viewer.project_name, True)}))

    async def download(request: Request, viewer: Viewer) -> Response:
        data = await run_in_threadpool(service.data, viewer.principal, image_id(request))
        if data.source is None or data.image.blob_digest is None:
            raise Conflict(
                f"image {data.image.name or data.image.id} is {data.image.status}: "
                "it has no data to download"
            )
        try:
            response = await blob_response(
                request,
                data.source,
                data.image.blob_digest,
                data.size,
                {"Content-MD5": data.image.checksum or ""},
                filename=download_filename(data.image),
            )
        except FileNotFoundError:
            raise NotFound(f"the data of image {data.image.id} is missing") from None
        return secure(response)

    async def detail(request: Request, viewer: Viewer) -> Response:
        found = await run_in_threadpool(service.get_visible, viewer.principal, image_id(request))
        shown = (await run_in_threadpool(views, viewer, [found]))[0]
        return page(request, "image.html", {"viewer": viewer, "image": shown})

    def after_change(request: Request) -> Response:
        if wants_json(request):
            return secure(JSONResponse({"id": image_id(request)}))
        return secure(RedirectResponse(LIST, status_code=303))

    async def deactivate(request: Request, viewer: Viewer) -> Response:
        await run_in_threadpool(service.deactivate, viewer.principal, image_id(request))
        return after_change(request)

    async def reactivate(request: Request, viewer: Viewer) -> Response:
        await run_in_threadpool(service.reactivate, viewer.principal, image_id(request))
        return after_change(request)

    async def delete(request: Request, viewer: Viewer) -> Response:
        try:
            await run_in_threadpool(service.delete, viewer.principal, image_id(request))
        except DomainError as error:
            if wants_json(request):
                return json_error(error)
            raise
        return after_change(request)

    return [
        Route(
            "/images",
            door.page({"GET": (LIST_ACTION, list_page), "POST": (CREATE_ACTION, create)}),
            methods=["GET", "POST"],
        ),
        Route("/images/{image_id}", door.page({"GET": (GET_ACTION, detail)}), methods=["GET"]),
        Route(
            "/images/{image_id}/file",
            door.page({"GET": (DOWNLOAD_ACTION, download), "PUT": (UPLOAD_ACTION, upload)}),
            methods=["GET", "PUT"],
        ),
        Route(
            "/images/{image_id}/deactivate",
            door.page({"POST": (UPDATE_ACTION, deactivate)}),
            methods=["POST"],
        ),
        Route(
            "/images/{image_id}/reactivate",
            door.page({"POST": (UPDATE_ACTION, reactivate)}),
            methods=["POST"],
        ),
        Route(
            "/images/{image_id}/delete",
            door.page({"POST": (DELETE_ACTION, delete)}),
            methods=["POST"],
        ),
    ]
