"""The OpenAPI 3.0 description of the DiDi custom image (CIMG) dialect, published at
`/dicloud/openapi.json`, so that users can generate clients for the calls `didi.py` answers
(DiDi publishes pages, not a machine-readable description) and the tests can hold the server
to it with schemathesis.

Every call answers DiDi's envelope `{errno, errmsg, requestId, data}`: errno 0 with HTTP 200
when it worked, and otherwise the HTTP status of the core error with DiDi's errno (13 bad
parameters, 4 authentication, 41026 image not found, 10000001 no permission, …). The regions
are the server's configured ones, so the document is made for them (and mounted by the app,
which knows them, rather than by `didi.py`, whose limits it names).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import Route

from imagedepot.api.didi import BATCH_MAX, LIST_LIMIT_MAX, START_MAX, TEXT_MAX
from imagedepot.api.openapi import (
    SECURITY,
    SECURITY_SCHEMES,
    document_route,
    error_codes,
    error_responses,
    prop,
    query_parameter,
    ref,
    response,
)

OPENAPI_PATH = "/dicloud/openapi.json"
UUID_PATTERN = "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
"""What the server reads as a uuid: 32 hex digits, dashed as a UUID or not (braces and a
`urn:uuid:` prefix are read too)."""


def _schemas(regions: Sequence[str]) -> dict[str, Any]:
    region = prop("string", "One of the server's regions.", enum=list(regions))
    uuid = {"type": "string", "pattern": UUID_PATTERN}
    name = {"type": "string", "minLength": 1, "maxLength": TEXT_MAX, "pattern": r"\S"}
    description = {"type": "string", "maxLength": TEXT_MAX, "nullable": True}

    def batch(entry: dict[str, Any], required: list[str]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["regionId", "cimg"],
            "properties": {
                "regionId": region,
                "cimg": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": BATCH_MAX,
                    "description": "Every entry is done, or none.",
                    "items": {"type": "object", "required": required, "properties": entry},
                },
            },
        }

    return {
        "ListRequest": {
            "type": "object",
            "required": ["regionId"],
            "properties": {
                "regionId": region,
                "start": prop("integer", "Items to skip.", minimum=0, maximum=START_MAX, default=0),
                "limit": prop(
                    "integer", "Items per page.", minimum=1, maximum=LIST_LIMIT_MAX, default=20
                ),
                "condition": {
                    "type": "object",
                    "nullable": True,
                    "properties": {
                        "names": {
                            "type": "array",
                            "nullable": True,
                            "description": "Only images with one of these names.",
                            "items": {"type": "string"},
                        }
                    },
                },
            },
        },
        "CreateRequest": batch(
            {"name": name, "snapUuid": uuid, "description": description}, ["name", "snapUuid"]
        ),
        "ImportRequest": batch(
            {
                "name": name,
                "originImageUuid": uuid,
                "originRegionId": region,
                "description": description,
            },
            ["name", "originImageUuid", "originRegionId"],
        ),
        "DeleteRequest": batch({"cimgUuid": uuid}, ["cimgUuid"]),
        "ChangeNameRequest": batch({"cimgUuid": uuid, "name": name}, ["cimgUuid", "name"]),
        "Cimg": {
            "type": "object",
            "required": [
                "cimgUuid",
                "cimgId",
                "name",
                "createTime",
                "updateTime",
                "isShared",
                "regions",
                "description",
                "status",
                "osFamily",
                "osVersion",
                "osArch",
                "platform",
                "size",
                "type",
                "scenes",
                "zones",
                "cimgTags",
                "requirement",
            ],
            "properties": {
                "cimgUuid": prop("string", "32 hex digits.", pattern="^[0-9a-f]{32}$"),
                "cimgId": prop("string", "cimg- and 8 hex digits.", pattern="^cimg-[0-9a-f]{8}$"),
                "name": prop("string", "The image's name."),
                "createTime": prop("integer", "Milliseconds since 1970.", format="int64"),
                "updateTime": prop("integer", "Milliseconds since 1970.", format="int64"),
                "isShared": prop("boolean", "Shared with the caller (never here)."),
                "regions": prop("array", "Where it lives.", items={"type": "string"}),
                "description": prop("string", "Its description."),
                "status": prop(
                    "string",
                    "Where it is.",
                    enum=["Creating", "Ready", "Disabled", "Failed", "Deleting", "Deleted"],
                ),
                "osFamily": prop("string", "CentOS, Ubuntu, …"),
                "osVersion": prop("string", "The OS version."),
                "osArch": prop("string", "The architecture."),
                "platform": prop("string", "Linux, Windows, …"),
                "size": prop("integer", "Bytes.", format="int64"),
                "type": prop("string", "custom or snapshot.", enum=["custom", "snapshot"]),
                "scenes": prop("array", "base.", items={"type": "string"}),
                "zones": prop("array", "Zones.", items={"type": "string"}),
                "cimgTags": prop("array", "Tags.", items={"type": "string"}),
                "requirement": {
                    "type": "object",
                    "required": ["minDiskSize"],
                    "properties": {"minDiskSize": prop("integer", "Bytes.", format="int64")},
                },
            },
        },
        "Job": {
            "type": "object",
            "required": [
                "jobUuid",
                "uuid",
                "resourceUuid",
                "resourceType",
                "type",
                "progress",
                "done",
                "success",
                "status",
                "result",
            ],
            "properties": {
                "jobUuid": prop("string", "32 hex digits.", pattern="^[0-9a-f]{32}$"),
                "uuid": prop("string", "The image's uuid."),
                "resourceUuid": prop("string", "The image's uuid."),
                "resourceType": prop("string", "cimg.", enum=["cimg"]),
                "type": prop(
                    "string",
                    "What the job did.",
                    enum=["CreateCIMG", "DeleteCIMG", "ImportCIMG", "ChangeCIMGName"],
                ),
                "progress": prop("integer", "Percent.", minimum=0, maximum=100),
                "done": prop("boolean", "Finished."),
                "success": prop("boolean", "Finished well."),
                "status": prop("string", "Success, …"),
                "result": prop("string", "Why it failed."),
            },
        },
        "Error": {
            "type": "object",
            "description": "The envelope of every error: errno is not 0 and data is null.",
            "required": ["errno", "errmsg", "requestId", "data"],
            "properties": {
                "errno": prop("integer", "DiDi's error number.", minimum=1),
                "errmsg": prop("string", "What went wrong, naming the field."),
                "requestId": prop("string", "The request's id (as X-Request-Id)."),
                "data": {"nullable": True, "enum": [None]},
            },
        },
    }


def _envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["errno", "errmsg", "requestId", "data"],
        "properties": {
            "errno": prop("integer", "0: it worked.", enum=[0]),
            "errmsg": prop("string", "ok.", enum=["ok"]),
            "requestId": prop("string", "The request's id (as X-Request-Id)."),
            "data": data,
        },
    }


def _call(
    summary: str, operation_id: str, body: str, data: dict[str, Any], *extra_errors: int
) -> dict[str, Any]:
    return {
        "summary": summary,
        "operationId": operation_id,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": ref(body)}},
        },
        "responses": {
            "200": response("It worked.", _envelope(data)),
            **error_responses(error_codes("POST", *extra_errors), ref("Error")),
        },
    }


def openapi_document(regions: Sequence[str]) -> dict[str, Any]:
    jobs = {"type": "array", "items": ref("Job")}
    base = "/dicloud/i/storage/cimg"
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "imagedepot DiDi custom images (CIMG)",
            "version": "v1",
            "description": "DiDi Cloud custom images. Changes copy no bytes, so their jobs are "
            "reported done at once. Every response carries X-Request-Id.",
        },
        "paths": {
            f"{base}/list": {
                "post": _call(
                    "List custom images",
                    "ListCimg",
                    "ListRequest",
                    {
                        "type": "object",
                        "required": ["count", "items"],
                        "properties": {
                            "count": prop("integer", "Images matching, on every page."),
                            "items": {"type": "array", "items": ref("Cimg")},
                        },
                    },
                )
            },
            f"{base}/create": {
                "post": _call(
                    "Make images from snapshots of the same region",
                    "CreateCimg",
                    "CreateRequest",
                    jobs,
                    404,
                    409,
                )
            },
            f"{base}/delete": {
                "post": _call("Delete images", "DeleteCimg", "DeleteRequest", jobs, 404, 409)
            },
            f"{base}/import": {
                "post": _call(
                    "Copy images from another region", "ImportCimg", "ImportRequest", jobs, 404, 409
                )
            },
            f"{base}/changeName": {
                "post": _call(
                    "Rename images", "ChangeCimgName", "ChangeNameRequest", jobs, 404, 409
                )
            },
            "/dicloud/i/result": {
                "get": {
                    "summary": "The jobs of earlier calls",
                    "operationId": "ShowJobs",
                    "parameters": [
                        query_parameter(
                            "regionId", {"type": "string", "enum": list(regions)}, required=True
                        ),
                        query_parameter(
                            "jobUuids",
                            {
                                "type": "string",
                                "pattern": f"^{UUID_PATTERN[1:-1]}(,{UUID_PATTERN[1:-1]})*$",
                            },
                            "Job uuids, comma-separated.",
                            required=True,
                        ),
                    ],
                    "responses": {
                        "200": response("The jobs.", _envelope(jobs)),
                        **error_responses(error_codes("GET", 404), ref("Error")),
                    },
                }
            },
        },
        "components": {"schemas": _schemas(regions), "securitySchemes": SECURITY_SCHEMES},
        "security": SECURITY,
    }


def openapi_route(regions: Sequence[str]) -> Route:
    return document_route(OPENAPI_PATH, openapi_document(regions))
