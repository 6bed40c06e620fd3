"""The OpenAPI 3.0 description of the CCE v5 dialect (`/v5/imagecaches` and imagedepot's own
`/v5/upstreams`), published at `/v5/openapi.json` so that users can generate clients for what
this server answers (the Huawei SDK covers only the seeds' calls, not `progress` or the
upstreams), and so that the tests can hold the server to it with schemathesis.

It states the bounds `cce.py` and the domain enforce (name pattern and length, 1–20 images,
20–400 GiB, 0–10000 days, unknown fields refused), every status code a route answers, and the
`{"error_code","error_msg"}` body of each error. It is static, so it lives apart from the
routes; it names the domain's constants rather than repeating them.
"""

from __future__ import annotations

from typing import Any

from imagedepot.api.openapi import (
    SECURITY,
    SECURITY_SCHEMES,
    nullable,
    operation,
    path_parameter,
    pattern,
    prop,
    query_parameter,
    ref,
    required_json,
    response,
)
from imagedepot.domain.caches import (
    IMAGES_MAX,
    IMAGES_MIN,
    NAME_MAX,
    NAME_RE,
    RETENTION_MAX,
    RETENTION_MIN,
    SECRET_REF_RE,
    SIZE_GIB_DEFAULT,
    SIZE_GIB_MAX,
    SIZE_GIB_MIN,
    CacheStatus,
)
from imagedepot.domain.references import MAX_REFERENCE_LENGTH
from imagedepot.domain.upstreams import MIRRORS_MAX

OPENAPI_PATH = "/v5/openapi.json"
NAME_PATTERN = pattern(NAME_RE)
SECRET_REF_PATTERN = pattern(SECRET_REF_RE)
DURATION_PATTERN = "^[0-9]{1,6}(s|m|h|d)$"
CHECK_PATTERN = "^(always|never|(if-older-than|ifOlderThan)=[0-9]{1,6}(s|m|h|d))$"


def _schemas() -> dict[str, Any]:
    image_ref = {"type": "string", "minLength": 1, "maxLength": MAX_REFERENCE_LENGTH}
    secrets = prop(
        "array",
        "Pull secrets as namespace:name; each must exist in the project.",
        items={"type": "string", "pattern": SECRET_REF_PATTERN},
    )
    cluster = prop("string", "The cluster's UID; kept, not used here.")
    building: dict[str, Any] = {
        "type": "object",
        "description": "How the cache is built.",
        "properties": {"cluster": cluster, "image_pull_secrets": secrets},
    }
    refresh = prop(
        "string",
        "imagedepot's extension: re-resolve the tags this often (10s to 365d); a moved tag "
        "is built as the next generation.",
        pattern=DURATION_PATTERN,
    )
    return {
        "ImageCacheDetail": {
            "type": "object",
            "required": [
                "name",
                "id",
                "created_at",
                "images",
                "image_cache_size",
                "retention_days",
                "building_config",
                "status",
            ],
            "properties": {
                "name": prop("string", "The cache's name."),
                "id": prop("string", "The cache's id.", format="uuid"),
                "created_at": prop(
                    "string", "When it was created, as 2024-11-25 06:32:34.923248 +0000 UTC."
                ),
                "images": prop("array", "The images it holds.", items={"type": "string"}),
                "image_cache_size": prop("integer", "Size budget in GiB."),
                "retention_days": prop("integer", "Days it is kept; 0 is forever."),
                "building_config": {
                    **building,
                    "required": ["image_pull_secrets"],
                    "properties": {
                        "cluster": cluster,
                        "image_pull_secrets": prop(
                            "array", "Pull secrets as namespace:name.", items={"type": "string"}
                        ),
                    },
                },
                "status": prop(
                    "string", "Where the cache is.", enum=[status.value for status in CacheStatus]
                ),
                "message": prop("string", "Why it failed or is unavailable."),
                "refresh_interval": prop("string", "How often its tags are re-resolved."),
            },
        },
        "CreateImageCacheRequestBody": {
            "type": "object",
            "required": ["name", "images"],
            "additionalProperties": False,
            "properties": {
                "name": prop(
                    "string",
                    "Lowercase letters, digits and '-', starting with a letter and not ending "
                    "with '-'; unique in the project.",
                    minLength=1,
                    maxLength=NAME_MAX,
                    pattern=NAME_PATTERN,
                ),
                "images": prop(
                    "array",
                    "Image references (nginx:stable, registry.example.com/team/app@sha256:…), "
                    "each listed once.",
                    items=image_ref,
                    minItems=IMAGES_MIN,
                    maxItems=IMAGES_MAX,
                    uniqueItems=True,
                ),
                "image_cache_size": prop(
                    "integer",
                    "Size budget in GiB.",
                    minimum=SIZE_GIB_MIN,
                    maximum=SIZE_GIB_MAX,
                    default=SIZE_GIB_DEFAULT,
                ),
                "retention_days": prop(
                    "integer",
                    "Days to keep the cache; 0 keeps it forever.",
                    minimum=RETENTION_MIN,
                    maximum=RETENTION_MAX,
                    default=0,
                ),
                "building_config": {**building, "additionalProperties": False},
                "refresh_interval": refresh,
            },
        },
        "ImageCacheProgress": {
            "type": "object",
            "description": "imagedepot's extension: per-image digest, size and bytes pulled.",
            "required": ["id", "status", "images"],
            "properties": {
                "id": prop("string", "The cache's id."),
                "status": prop("string", "As in ImageCacheDetail."),
                "message": nullable("string", "Why it failed or is unavailable."),
                "reason": nullable("string", "A CamelCase reason for a failure."),
                "last_used_at": nullable("string", "When the registry port last served it."),
                "images": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["image", "size_bytes", "pulled_bytes"],
                        "properties": {
                            "image": prop("string", "The image as the cache names it."),
                            "digest": nullable("string", "The manifest digest it resolved to."),
                            "size_bytes": prop("integer", "Bytes it takes."),
                            "pulled_bytes": prop("integer", "Bytes pulled so far."),
                            "checked_at": nullable("string", "When its tag was last checked."),
                            "moved_from": nullable(
                                "string", "What the tag stood for before it last moved."
                            ),
                        },
                    },
                },
            },
        },
        "Upstream": {
            "type": "object",
            "description": "A registry the project may pull through the registry port.",
            "required": [
                "registry",
                "mirrors",
                "pull_secret",
                "plain_http",
                "insecure_skip_verify",
                "check",
                "created_at",
            ],
            "properties": {
                "registry": prop("string", "The host images name (docker.io, host:5000)."),
                "mirrors": prop("array", "Hosts tried first.", items={"type": "string"}),
                "pull_secret": nullable("string", "The login's secret, namespace:name."),
                "plain_http": prop("boolean", "The registry speaks plain HTTP."),
                "insecure_skip_verify": prop("boolean", "TLS without verification."),
                "check": prop("string", "always, never or if-older-than=DURATION."),
                "created_at": nullable("string", "When it was added.", format="date-time"),
            },
        },
        "UpstreamRequestBody": {
            "type": "object",
            "required": ["registry"],
            "additionalProperties": False,
            "properties": {
                "registry": prop(
                    "string", "A registry host such as docker.io or registry.example.com:5000."
                ),
                "mirrors": prop(
                    "array",
                    "Mirror hosts, tried first.",
                    items={"type": "string"},
                    maxItems=MIRRORS_MAX,
                ),
                "pull_secret": prop(
                    "string",
                    "A secret of the project holding the login, namespace:name.",
                    pattern=SECRET_REF_PATTERN,
                ),
                "plain_http": prop("boolean", "Plain HTTP (excludes insecure_skip_verify)."),
                "insecure_skip_verify": prop("boolean", "TLS without verification."),
                "check": prop(
                    "string",
                    "When a pull of a cached tag asks the upstream first: always (default), "
                    "never, or if-older-than=30m.",
                    pattern=CHECK_PATTERN,
                ),
            },
        },
        "Error": {
            "type": "object",
            "description": "The body of every error.",
            "required": ["error_code", "error_msg"],
            "additionalProperties": False,
            "properties": {
                "error_code": prop("string", "CCE.01<status>001.", pattern=r"^CCE\.01[0-9]{3}001$"),
                "error_msg": prop("string", "What went wrong, naming the field."),
            },
        },
    }


def _wrapped(key: str, schema: str, array: bool = False) -> dict[str, Any]:
    inner = {"type": "array", "items": ref(schema)} if array else ref(schema)
    return {"type": "object", "required": [key], "properties": {key: inner}}


def openapi_document() -> dict[str, Any]:
    cache = _wrapped("image_cache", "ImageCacheDetail")
    upstream = _wrapped("upstream", "Upstream")
    cache_id = path_parameter("image_cache_id", "The cache's id.")
    registry = path_parameter("registry", "The upstream's registry host.")
    name_filter = query_parameter(
        "name",
        {"type": "string", "maxLength": NAME_MAX, "pattern": f"^(?:{NAME_PATTERN[1:-1]})?$"},
        "Only the cache of this exact name (empty: no filter).",
    )
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "imagedepot CCE v5 ImageCache",
            "version": "v5",
            "description": "Huawei CCE v5 image caches as huaweicloudsdkcce calls them, with "
            "imagedepot's extensions (per-image progress, refresh intervals, upstreams for "
            "pull-through). Every response carries X-Request-Id.",
        },
        "paths": {
            "/v5/imagecaches": {
                "get": operation(
                    "GET",
                    "List the project's image caches",
                    "ListImageCaches",
                    {"200": response("OK.", _wrapped("image_caches", "ImageCacheDetail", True))},
                    parameters=[name_filter],
                ),
                "post": operation(
                    "POST",
                    "Create an image cache; the worker builds it",
                    "CreateImageCache",
                    {"201": response("Created, status Creating.", cache)},
                    409,
                    body=required_json("CreateImageCacheRequestBody"),
                ),
            },
            "/v5/imagecaches/{image_cache_id}": {
                "parameters": [cache_id],
                "get": operation(
                    "GET",
                    "Show an image cache",
                    "ShowImageCache",
                    {"200": response("OK.", cache)},
                    404,
                ),
                "delete": operation(
                    "DELETE",
                    "Delete an image cache (asynchronous: 404 once it is gone)",
                    "DeleteImageCache",
                    {"202": response("Accepted, status Deleting.", cache)},
                    404,
                ),
            },
            "/v5/imagecaches/{image_cache_id}/progress": {
                "parameters": [cache_id],
                "get": operation(
                    "GET",
                    "Per-image progress of an image cache",
                    "ShowImageCacheProgress",
                    {"200": response("OK.", ref("ImageCacheProgress"))},
                    404,
                ),
            },
            "/v5/upstreams": {
                "get": operation(
                    "GET",
                    "List the registries the project may pull through",
                    "ListUpstreams",
                    {"200": response("OK.", _wrapped("upstreams", "Upstream", True))},
                ),
                "post": operation(
                    "POST",
                    "Add an upstream, or replace the one for the same registry",
                    "PutUpstream",
                    {
                        "200": response("Replaced.", upstream),
                        "201": response("Added.", upstream),
                    },
                    body=required_json("UpstreamRequestBody"),
                ),
            },
            "/v5/upstreams/{registry}": {
                "parameters": [registry],
                "get": operation(
                    "GET",
                    "Show an upstream",
                    "ShowUpstream",
                    {"200": response("OK.", upstream)},
                    404,
                ),
                "delete": operation(
                    "DELETE",
                    "Remove an upstream",
                    "DeleteUpstream",
                    {"200": response("Removed; the body is what was removed.", upstream)},
                    404,
                ),
            },
        },
        "components": {"schemas": _schemas(), "securitySchemes": SECURITY_SCHEMES},
        "security": SECURITY,
    }
