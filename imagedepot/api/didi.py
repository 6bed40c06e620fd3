"""The DiDi Cloud custom image (CIMG) dialect: `POST /dicloud/i/storage/cimg/{list,create,
delete,import,changeName}` and `GET /dicloud/i/result`, as the seed `004` shows.

Every answer is DiDi's envelope `{errno, errmsg, requestId, data}` (errno 0 when it worked;
1/13 bad parameters, 4 authentication, 41026 image query failed, 10000001 no permission).
A cimg is a VM image; uuids are written as 32 hex digits, times in milliseconds. Changes copy
no bytes, so their jobs are reported done at once.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imagedepot.api.auth import Endpoint
from imagedepot.api.context import ApiContext
from imagedepot.api.errors import finish, http_status
from imagedepot.api.wire import is_json_type, json_object
from imagedepot.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
)
from imagedepot.domain.identity import Principal
from imagedepot.domain.vmimages import (
    ImageJob,
    ImageQuery,
    ImageStatus,
    ImageType,
    JobType,
    VmImage,
)
from imagedepot.services.vmimages import ImageCopy

LIST_LIMIT_MAX = 1000
GIB = 1 << 30
BATCH_MAX = 100
START_MAX = 10**9
TEXT_MAX = 255
"""The longest name or description."""
_ERRNO: list[tuple[type[DomainError], int]] = [
    (InvalidInput, 13),
    (Unauthenticated, 4),
    (Forbidden, 10000001),
    (NotFound, 41026),
    (Conflict, 1),
    (PayloadTooLarge, 13),
    (RateLimited, 3),
]
"""DiDi's errno for each core error; the HTTP status is the shared one."""
_STATUSES = {
    # Queued is a Glance image without data (never uploaded, or its upload was refused):
    # nothing is making it, and DiDi has no call that could give it data, so to a DiDi
    # client it is an image that failed to come about, not one still "Creating".
    ImageStatus.QUEUED: "Failed",
    ImageStatus.SAVING: "Creating",
    ImageStatus.UPLOADING: "Creating",
    ImageStatus.IMPORTING: "Creating",
    ImageStatus.ACTIVE: "Ready",
    ImageStatus.DEACTIVATED: "Disabled",
    ImageStatus.KILLED: "Failed",
    ImageStatus.PENDING_DELETE: "Deleting",
    ImageStatus.DELETED: "Deleted",
}


def envelope(data: Any, *, errno: int = 0, errmsg: str = "ok", status: int = 200) -> JSONResponse:
    """The envelope without its requestId, which `with_request_id` fills in."""
    return JSONResponse(
        {"errno": errno, "errmsg": errmsg, "requestId": "", "data": data}, status_code=status
    )


def render_error(error: DomainError) -> Response:
    errno = next((e for kind, e in _ERRNO if isinstance(error, kind)), 2)
    response = envelope(None, errno=errno, errmsg=error.message, status=http_status(error))
    return finish(response, error)


def with_request_id(endpoint: Endpoint) -> Endpoint:
    """Put the request's id (the one in X-Request-Id) into the envelope's requestId."""

    async def wrapped(request: Request) -> Response:
        response = await endpoint(request)
        if not isinstance(response, JSONResponse):
            return response
        body = json.loads(bytes(response.body))
        body["requestId"] = getattr(request.state, "request_id", "")
        headers = {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}
        return JSONResponse(body, status_code=response.status_code, headers=headers)

    wrapped.actions = endpoint.actions  # type: ignore[attr-defined]
    return wrapped


def millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def hex_id(value: str) -> str:
    return uuid.UUID(value).hex


def parse_uuid(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string", field=field)
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidInput(f"{field} {value!r} is not a uuid", field=field) from None


def cimg_item(image: VmImage) -> dict[str, Any]:
    properties = image.properties
    os_type = properties.get("os_type")
    return {
        "cimgUuid": hex_id(image.id),
        "cimgId": "cimg-" + hex_id(image.id)[:8],
        "name": image.name or "",
        "createTime": millis(image.created_at),
        "updateTime": millis(image.updated_at),
        "isShared": False,
        "regions": [image.region] if image.region else [],
        "description": image.description or "",
        "status": _STATUSES[image.status],
        "osFamily": properties.get("os_distro", ""),
        "osVersion": properties.get("os_version", ""),
        "osArch": properties.get("architecture", ""),
        "platform": os_type.capitalize() if os_type else "",
        "size": image.size or 0,
        "type": "snapshot" if image.image_type is ImageType.SNAPSHOT else "custom",
        "scenes": ["base"],
        "zones": [],
        "cimgTags": list(image.tags),
        "requirement": {"minDiskSize": image.min_disk * GIB},
    }


def job_body(job: ImageJob) -> dict[str, Any]:
    return {
        "jobUuid": hex_id(job.id),
        "uuid": hex_id(job.resource_id),
        "resourceUuid": hex_id(job.resource_id),
        "resourceType": "cimg",
        "type": job.type.value,
        "progress": job.progress,
        "done": job.done,
        "success": job.success,
        "status": job.status,
        "result": job.result or "",
    }


# --- request parsing ------------------------------------------------------------------------


def _integer(body: dict[str, Any], field: str, default: int, low: int, high: int) -> int:
    value = body.get(field, default)
    if not is_json_type(value, int) or not low <= value <= high:
        raise InvalidInput(f"{field} must be an integer from {low} to {high}", field=field)
    return value


def _text(entry: dict[str, Any], field: str, where: str, *, required: bool = True) -> str | None:
    value = entry.get(field)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > TEXT_MAX:
        raise InvalidInput(
            f"{where} must be a non-empty string of up to {TEXT_MAX} characters", field=where
        )
    return value


def _entries(body: dict[str, Any]) -> list[dict[str, Any]]:
    entries = body.get("cimg")
    if not isinstance(entries, list) or not 1 <= len(entries) <= BATCH_MAX:
        raise InvalidInput(f"cimg must be an array of 1 to {BATCH_MAX} objects", field="cimg")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidInput(f"cimg[{index}] must be an object", field=f"cimg[{index}]")
    return entries


# --- routes ---------------------------------------------------------------------------------


def routes(context: ApiContext) -> list[Route]:
    service = context.required_vm_images()

    def region_of(body: dict[str, Any]) -> str:
        return service.check_region(body.get("regionId"), "regionId")

    def list_cimg(_: Request, raw: bytes, principal: Principal) -> Response:
        body = json_object(raw, allow_empty=True)
        region = region_of(body)
        start = _integer(body, "start", 0, 0, START_MAX)
        limit = _integer(body, "limit", 20, 1, LIST_LIMIT_MAX)
        # Only null stands for "none": `{}`, `[]`, `0` and `""` are the wrong type.
        condition = body.get("condition")
        condition = {} if condition is None else condition
        if not isinstance(condition, dict):
            raise InvalidInput("condition must be an object", field="condition")
        names = condition.get("names")
        names = [] if names is None else names
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise InvalidInput(
                "condition.names must be an array of strings", field="condition.names"
            )
        query = ImageQuery(
            project_id=principal.project_id,
            names=tuple(names),
            region=region,
            os_hidden=None,
            limit=limit,
            offset=start,
        )
        found = service.list(query)
        return envelope({"count": service.count(query), "items": [cimg_item(i) for i in found]})

    def copy_cimg(raw: bytes, principal: Principal, kind: JobType) -> Response:
        """`create` (from a snapshot, same region) and `import` (from another region): both
        make images that share their source's bytes."""
        body = json_object(raw, allow_empty=True)
        region = region_of(body)
        creating = kind is JobType.CREATE
        source_key = "snapUuid" if creating else "originImageUuid"
        copies = []
        for index, entry in enumerate(_entries(body)):
            where = f"cimg[{index}]"
            copies.append(
                ImageCopy(
                    source_id=parse_uuid(entry.get(source_key), f"{where}.{source_key}"),
                    name=str(_text(entry, "name", f"{where}.name")),
                    region=region,
                    kind=kind,
                    description=_text(entry, "description", f"{where}.description", required=False),
                    source_region=region
                    if creating
                    else service.check_region(
                        entry.get("originRegionId"), f"{where}.originRegionId"
                    ),
                    require_snapshot=creating,
                    source_field=f"{where}.{source_key}",
                )
            )
        return envelope([job_body(job) for job in service.copy_images(principal, copies)])

    def create_cimg(_: Request, raw: bytes, principal: Principal) -> Response:
        return copy_cimg(raw, principal, JobType.CREATE)

    def import_cimg(_: Request, raw: bytes, principal: Principal) -> Response:
        return copy_cimg(raw, principal, JobType.IMPORT)

    def delete_cimg(_: Request, raw: bytes, principal: Principal) -> Response:
        body = json_object(raw, allow_empty=True)
        region = region_of(body)
        ids = [
            parse_uuid(entry.get("cimgUuid"), f"cimg[{index}].cimgUuid")
            for index, entry in enumerate(_entries(body))
        ]
        return envelope([job_body(job) for job in service.delete_images(principal, region, ids)])

    def change_name(_: Request, raw: bytes, principal: Principal) -> Response:
        body = json_object(raw, allow_empty=True)
        region = region_of(body)
        renames = [
            (
                parse_uuid(entry.get("cimgUuid"), f"cimg[{index}].cimgUuid"),
                str(_text(entry, "name", f"cimg[{index}].name")),
            )
            for index, entry in enumerate(_entries(body))
        ]
        jobs = service.rename_images(principal, region, renames)
        return envelope([job_body(job) for job in jobs])

    def job_results(request: Request, _: bytes, principal: Principal) -> Response:
        service.check_region(request.query_params.get("regionId"), "regionId")
        text = request.query_params.get("jobUuids", "")
        wanted = [part.strip() for part in text.split(",") if part.strip()]
        if not wanted:
            raise InvalidInput("jobUuids must list at least one job uuid", field="jobUuids")
        ids = [parse_uuid(job_id, "jobUuids") for job_id in wanted]
        return envelope([job_body(job) for job in service.jobs(principal, ids)])

    gate = context.gate
    calls = [
        ("list", "cimg:list", list_cimg),
        ("create", "cimg:create", create_cimg),
        ("delete", "cimg:delete", delete_cimg),
        ("import", "cimg:import", import_cimg),
        ("changeName", "cimg:changeName", change_name),
    ]
    routes = [
        Route(
            f"/dicloud/i/storage/cimg/{path}",
            with_request_id(gate.route({"POST": (action, handler)}, render_error)),
            methods=["POST"],
        )
        for path, action, handler in calls
    ]
    routes.append(
        Route(
            "/dicloud/i/result",
            with_request_id(gate.route({"GET": ("cimg:result", job_results)}, render_error)),
            methods=["GET"],
        )
    )
    return routes
