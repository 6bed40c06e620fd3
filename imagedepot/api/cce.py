"""The Huawei CCE v5 `ImageCache` dialect: `/v5/imagecaches`, as the seeds and huaweicloudsdkcce expect.

Bodies are flat JSON; responses wrap the object in `image_cache` / `image_caches`;
errors are always JSON `{"error_code","error_msg"}` (the SDK crashes on anything
else), and every response carries `X-Request-Id`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imagedepot.api.cce_openapi import OPENAPI_PATH, openapi_document
from imagedepot.api.context import ApiContext
from imagedepot.api.errors import finish, http_status
from imagedepot.api.openapi import document_route
from imagedepot.api.wire import JSON_TYPE_NAMES, is_json_type, json_object, utc_timestamp
from imagedepot.domain.caches import NAME_MAX, NAME_RE, CacheSpec, ImageCache
from imagedepot.domain.durations import format_duration, parse_duration
from imagedepot.domain.errors import (
    DomainError,
    InvalidInput,
    NotFound,
)
from imagedepot.domain.identity import Principal
from imagedepot.domain.upstreams import CheckPolicy, Upstream

CREATED_AT_FORMAT = "%Y-%m-%d %H:%M:%S.%f +0000 UTC"
_CREATE_FIELDS: dict[str, type] = {
    "name": str,
    "images": list,
    "image_cache_size": int,
    "retention_days": int,
    "building_config": dict,
    "refresh_interval": str,
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
    if cache.spec.refresh_seconds:
        body["refresh_interval"] = format_duration(timedelta(seconds=cache.spec.refresh_seconds))
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
        # When the registry port last served a pull from it (Alibaba's LastMatchedTime), for eviction.
        "last_used_at": utc_timestamp(cache.last_used_at),
        "images": [
            {
                "image": image.image,
                "digest": image.digest,
                "size_bytes": image.size_bytes,
                "pulled_bytes": image.pulled_bytes,
                # When the upstream was last asked what the tag stands for, and what it
                # stood for before the last refresh moved it.
                "checked_at": utc_timestamp(image.checked_at),
                "moved_from": image.moved_from,
            }
            for image in cache.images
        ],
    }


def _check_fields(body: dict[str, Any], allowed: dict[str, type], prefix: str) -> None:
    for key, value in body.items():
        where = f"{prefix}{key}"
        if key not in allowed:
            raise InvalidInput(f"unknown field {where!r}", field=where)
        expected = allowed[key]
        if not is_json_type(value, expected):
            raise InvalidInput(f"{where} must be {JSON_TYPE_NAMES[expected]}", field=where)


def parse_create(raw: bytes) -> CacheSpec:
    body = json_object(raw)
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
        refresh_seconds=_refresh_seconds(body.get("refresh_interval"), "refresh_interval"),
    )


def _refresh_seconds(text: str | None, field_name: str) -> int:
    """`6h` and the like (the same spelling as the upstreams' check policy); none: never."""
    if text is None:
        return 0
    return int(parse_duration(text, field_name).total_seconds())


_UPSTREAM_FIELDS: dict[str, type] = {
    "registry": str,
    "mirrors": list,
    "pull_secret": str,
    "plain_http": bool,
    "insecure_skip_verify": bool,
    "check": str,
}


def upstream_detail(upstream: Upstream) -> dict[str, Any]:
    return {
        "registry": upstream.registry,
        "mirrors": list(upstream.mirrors),
        "pull_secret": upstream.pull_secret,
        "plain_http": upstream.plain_http,
        "insecure_skip_verify": upstream.insecure_skip_verify,
        "check": str(upstream.check),
        "created_at": utc_timestamp(upstream.created_at),
    }


def parse_upstream(raw: bytes, project_id: str) -> Upstream:
    """imagedepot's extension: `{"registry", "mirrors", "pull_secret", "plain_http",
    "insecure_skip_verify", "check"}`; only `registry` is required."""
    body = json_object(raw)
    _check_fields(body, _UPSTREAM_FIELDS, "")
    if "registry" not in body:
        raise InvalidInput("registry is required", field="registry")
    mirrors = body.get("mirrors") or []
    for index, mirror in enumerate(mirrors):
        if not isinstance(mirror, str):
            raise InvalidInput(f"mirrors[{index}] must be a string", field=f"mirrors[{index}]")
    return Upstream(
        project_id=project_id,
        registry=body["registry"],
        mirrors=tuple(mirrors),
        pull_secret=body.get("pull_secret") or None,
        plain_http=body.get("plain_http", False),
        insecure_skip_verify=body.get("insecure_skip_verify", False),
        check=CheckPolicy.parse(body.get("check", "always")),
    )


def _name_filter(name: str | None) -> str | None:
    """The list's `name`, held to the seed's rule for names (a name no cache can have is a
    mistake worth telling, not an empty list)."""
    if name is not None and not (len(name) <= NAME_MAX and NAME_RE.match(name)):
        raise InvalidInput(
            f"name must be 1-{NAME_MAX} lowercase letters, digits and '-', starting with a "
            f"letter and not ending with '-', got {name[:64]!r}",
            field="name",
        )
    return name


def render_error(error: DomainError) -> Response:
    return finish(error_response(http_status(error), error.message), error)


def routes(context: ApiContext) -> list[Route]:
    caches = context.caches

    def list_caches(request: Request, _: bytes, principal: Principal) -> Response:
        name = _name_filter(request.query_params.get("name") or None)
        return JSONResponse({"image_caches": [detail(c) for c in caches.list(principal, name)]})

    def create_cache(_: Request, raw: bytes, principal: Principal) -> Response:
        cache = caches.create(principal, parse_create(raw))
        context.notify_worker()
        return JSONResponse({"image_cache": detail(cache)}, status_code=201)

    def show_cache(request: Request, _: bytes, principal: Principal) -> Response:
        cache = caches.get(principal, request.path_params["image_cache_id"])
        return JSONResponse({"image_cache": detail(cache)})

    def delete_cache(request: Request, _: bytes, principal: Principal) -> Response:
        cache = caches.request_deletion(principal, request.path_params["image_cache_id"])
        context.notify_worker()
        return JSONResponse({"image_cache": detail(cache)}, status_code=202)

    def show_progress(request: Request, _: bytes, principal: Principal) -> Response:
        return JSONResponse(progress(caches.get(principal, request.path_params["image_cache_id"])))

    gate = context.gate
    collection = {
        "GET": ("cce:imageCache:list", list_caches),
        "POST": ("cce:imageCache:create", create_cache),
    }
    item = {
        "GET": ("cce:imageCache:get", show_cache),
        "DELETE": ("cce:imageCache:delete", delete_cache),
    }
    return [
        document_route(OPENAPI_PATH, openapi_document()),
        *upstream_routes(context),
        Route("/v5/imagecaches", gate.route(collection, render_error), methods=list(collection)),
        Route(
            "/v5/imagecaches/{image_cache_id}", gate.route(item, render_error), methods=list(item)
        ),
        Route(
            "/v5/imagecaches/{image_cache_id}/progress",
            gate.route({"GET": ("cce:imageCache:get", show_progress)}, render_error),
            methods=["GET"],
        ),
    ]


def upstream_routes(context: ApiContext) -> list[Route]:
    """`/v5/upstreams`: the registries the caller's project may pull through the registry
    port (imagedepot's own resource, in the CCE dialect's shapes)."""
    upstreams = context.upstreams
    if upstreams is None:
        return []

    def list_upstreams(_: Request, __: bytes, principal: Principal) -> Response:
        listed = upstreams.list(principal.project_id)
        return JSONResponse({"upstreams": [upstream_detail(u) for u in listed]})

    def put_upstream(_: Request, raw: bytes, principal: Principal) -> Response:
        wanted = parse_upstream(raw, principal.project_id)
        existed = upstreams.get(principal.project_id, wanted.registry) is not None
        stored = upstreams.put(wanted)
        return JSONResponse(
            {"upstream": upstream_detail(stored)}, status_code=200 if existed else 201
        )

    def show_upstream(request: Request, _: bytes, principal: Principal) -> Response:
        registry = request.path_params["registry"]
        found = upstreams.get(principal.project_id, registry)
        if found is None:
            raise NotFound(f"no upstream {registry[:255]!r} in this project", field="registry")
        return JSONResponse({"upstream": upstream_detail(found)})

    def remove_upstream(request: Request, _: bytes, principal: Principal) -> Response:
        registry = request.path_params["registry"]
        found = upstreams.get(principal.project_id, registry)
        if found is None:
            raise NotFound(f"no upstream {registry[:255]!r} in this project", field="registry")
        upstreams.remove(principal.project_id, registry)
        return JSONResponse({"upstream": upstream_detail(found)})

    gate = context.gate
    collection = {
        "GET": ("cce:upstream:list", list_upstreams),
        "POST": ("cce:upstream:create", put_upstream),
    }
    item = {
        "GET": ("cce:upstream:get", show_upstream),
        "DELETE": ("cce:upstream:delete", remove_upstream),
    }
    return [
        Route("/v5/upstreams", gate.route(collection, render_error), methods=list(collection)),
        Route("/v5/upstreams/{registry}", gate.route(item, render_error), methods=list(item)),
    ]
