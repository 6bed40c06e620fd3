"""The Huawei CCE v5 `ImageCache` dialect: `/v5/imagecaches`, as the seeds and huaweicloudsdkcce expect.

Bodies are flat JSON; responses wrap the object in `image_cache` / `image_caches`;
errors are always JSON `{"error_code","error_msg"}` (the SDK crashes on anything
else), and every response carries `X-Request-Id`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imagedepot.api.auth import authenticate, require_writer
from imagedepot.api.context import ApiContext
from imagedepot.domain.caches import CacheSpec, ImageCache
from imagedepot.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthenticated,
)

CREATED_AT_FORMAT = "%Y-%m-%d %H:%M:%S.%f +0000 UTC"
MAX_BODY_BYTES = 1024 * 1024
_ERROR_STATUS: list[tuple[type[DomainError], int]] = [
    (InvalidInput, 400),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
]
_CREATE_FIELDS: dict[str, type] = {
    "name": str,
    "images": list,
    "image_cache_size": int,
    "retention_days": int,
    "building_config": dict,
}
_BUILDING_FIELDS: dict[str, type] = {"cluster": str, "image_pull_secrets": list}


def error_code(status: int) -> str:
    return f"CCE.01{status}001"


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"error_code": error_code(status), "error_msg": message}, status_code=status
    )


def detail(cache: ImageCache) -> dict[str, Any]:
    building: dict[str, Any] = {"image_pull_secrets": list(cache.spec.pull_secrets)}
    if cache.spec.cluster is not None:
        building["cluster"] = cache.spec.cluster
    body: dict[str, Any] = {
        "name": cache.spec.name,
        "id": cache.id,
        "created_at": cache.created_at.strftime(CREATED_AT_FORMAT),
        "images": list(cache.spec.images),
        "image_cache_size": cache.spec.size_gib,
        "retention_days": cache.spec.retention_days,
        "building_config": building,
        "status": cache.status.value,
    }
    if cache.message:
        body["message"] = cache.message
    return body


def progress(cache: ImageCache) -> dict[str, Any]:
    """imagedepot's extension: per-image digest, size and bytes pulled (ImageCacheDetail stays exact)."""
    return {
        "id": cache.id,
        "status": cache.status.value,
        "message": cache.message,
        "reason": cache.reason,
        "images": [
            {
                "image": image.image,
                "digest": image.digest,
                "size_bytes": image.size_bytes,
                "pulled_bytes": image.pulled_bytes,
            }
            for image in cache.images
        ],
    }


_TYPE_NAMES = {str: "a string", int: "an integer", list: "an array", dict: "an object"}


def _check_fields(body: dict[str, Any], allowed: dict[str, type], prefix: str) -> None:
    for key, value in body.items():
        where = f"{prefix}{key}"
        if key not in allowed:
            raise InvalidInput(f"unknown field {where!r}", field=where)
        expected = allowed[key]
        if (isinstance(value, bool) and expected is not bool) or not isinstance(value, expected):
            raise InvalidInput(f"{where} must be {_TYPE_NAMES[expected]}", field=where)


def parse_create(raw: bytes) -> CacheSpec:
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidInput("request body is too large")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInput(f"request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    _check_fields(body, _CREATE_FIELDS, "")
    for required in ("name", "images"):
        if required not in body:
            raise InvalidInput(f"{required} is required", field=required)
    building = body.get("building_config") or {}
    _check_fields(building, _BUILDING_FIELDS, "building_config.")
    images = body["images"]
    for index, image in enumerate(images):
        if not isinstance(image, str):
            raise InvalidInput(f"images[{index}] must be a string", field=f"images[{index}]")
    secrets = building.get("image_pull_secrets") or []
    for index, secret in enumerate(secrets):
        if not isinstance(secret, str):
            where = f"building_config.image_pull_secrets[{index}]"
            raise InvalidInput(f"{where} must be a string", field=where)
    return CacheSpec(
        name=body["name"],
        images=tuple(images),
        size_gib=body.get("image_cache_size", 20),
        retention_days=body.get("retention_days", 0),
        cluster=building.get("cluster"),
        pull_secrets=tuple(secrets),
    )


Handler = Callable[[Request, bytes], Response]


def guarded(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Read the body on the event loop, run the handler (which touches the database) in a
    thread, and turn domain errors into CCE error bodies."""

    async def endpoint(request: Request) -> Response:
        try:
            body = await request.body() if request.method in {"POST", "PUT", "PATCH"} else b""
            return await run_in_threadpool(handler, request, body)
        except DomainError as error:
            status = next(code for kind, code in _ERROR_STATUS if isinstance(error, kind))
            return error_response(status, error.message)

    return endpoint


def routes(context: ApiContext) -> list[Route]:
    def list_or_create(request: Request, raw: bytes) -> Response:
        principal = authenticate(request, context.identity)
        if request.method == "GET":
            name = request.query_params.get("name")
            caches = context.caches.list(principal, name or None)
            return JSONResponse({"image_caches": [detail(cache) for cache in caches]})
        require_writer(principal)
        spec = parse_create(raw)
        cache = context.caches.create(principal, spec)
        context.notify_worker()
        return JSONResponse({"image_cache": detail(cache)}, status_code=201)

    def show_or_delete(request: Request, _: bytes) -> Response:
        principal = authenticate(request, context.identity)
        cache_id = request.path_params["image_cache_id"]
        if request.method == "GET":
            return JSONResponse({"image_cache": detail(context.caches.get(principal, cache_id))})
        require_writer(principal)
        cache = context.caches.request_deletion(principal, cache_id)
        context.notify_worker()
        return JSONResponse({"image_cache": detail(cache)}, status_code=202)

    def show_progress(request: Request, _: bytes) -> Response:
        principal = authenticate(request, context.identity)
        cache = context.caches.get(principal, request.path_params["image_cache_id"])
        return JSONResponse(progress(cache))

    return [
        Route("/v5/imagecaches", guarded(list_or_create), methods=["GET", "POST"]),
        Route(
            "/v5/imagecaches/{image_cache_id}", guarded(show_or_delete), methods=["GET", "DELETE"]
        ),
        Route("/v5/imagecaches/{image_cache_id}/progress", guarded(show_progress), methods=["GET"]),
    ]
