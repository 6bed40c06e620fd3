"""The OpenAPI v3 description of ImageSnapshot that `kubectl explain` and client-side field
validation fetch from `/openapi/v3`, with the ranges this service enforces. It is a large,
static document, so it lives apart from the code that serves the objects it describes.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imagedepot.api.auth import public
from imagedepot.api.k8s.names import API_VERSION, GROUP, KIND, LIST_KIND, PLURAL, VERSION
from imagedepot.api.k8s.objects import IMAGES_MAX, REGISTRIES_MAX
from imagedepot.api.k8s.patches import APPLY_PATCH, JSON_PATCH, MERGE_PATCH
from imagedepot.api.openapi import (
    SECURITY,
    SECURITY_SCHEMES,
    encode,
    error_codes,
    error_responses,
    path_parameter,
    prop,
    query_parameter,
    ref,
    response,
    string_map,
    strings,
)
from imagedepot.domain.caches import TIMEOUT_DEFAULT

_SCHEMA_PREFIX = "io.cci.api.pkg.apis.versioned.cci.v2."
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."


def openapi_schemas() -> dict[str, Any]:
    """ImageSnapshot as the seed describes it, with the ranges this service enforces."""
    gvk = [{"group": GROUP, "version": VERSION, "kind": KIND}]
    p = _SCHEMA_PREFIX
    return {
        f"{p}ImageSnapshot": {
            "type": "object",
            "description": "ImageSnapshot is a frozen set of container images, pre-pulled "
            "and served by imagedepot; the same object as a CCE v5 ImageCache.",
            "properties": {
                "apiVersion": prop("string", "APIVersion of this representation: cci/v2."),
                "kind": prop("string", "Kind of this object: ImageSnapshot."),
                "metadata": {**ref(f"{_META}ObjectMeta"), "description": "Standard metadata."},
                "spec": {
                    **ref(f"{p}ImageSnapshotSpec"),
                    "description": "What the snapshot holds; immutable once built (a "
                    "building or failed snapshot takes a new spec and builds it again).",
                },
                "status": {
                    **ref(f"{p}ImageSnapshotStatus"),
                    "description": "Most recently observed status. Read-only.",
                },
            },
            "x-kubernetes-group-version-kind": gvk,
        },
        f"{p}ImageSnapshotList": {
            "type": "object",
            "description": "A list of ImageSnapshots.",
            "required": ["items"],
            "properties": {
                "apiVersion": prop("string", "cci/v2"),
                "kind": prop("string", "ImageSnapshotList"),
                "items": {"type": "array", "items": ref(f"{p}ImageSnapshot")},
                "metadata": ref(f"{_META}ListMeta"),
            },
            "x-kubernetes-group-version-kind": [{**gvk[0], "kind": LIST_KIND}],
        },
        f"{p}ImageSnapshotSpec": {
            "type": "object",
            "description": "Specification of the images to snapshot and how to pull them.",
            "properties": {
                "buildingConfig": {
                    **ref(f"{p}BuildingConfig"),
                    "description": "How the snapshot is built.",
                },
                "imageSnapshotSize": prop(
                    "integer",
                    "Size budget of the snapshot in GiB (20-400).",
                    format="int32",
                    minimum=20,
                    maximum=400,
                    default=20,
                ),
                "images": prop(
                    "array",
                    f"Images to snapshot, at most {IMAGES_MAX}.",
                    items=ref(f"{p}ImageReference"),
                    maxItems=IMAGES_MAX,
                    minItems=1,
                ),
                "refreshInterval": prop(
                    "string",
                    "imagedepot's extension: re-resolve the tags this often (10s to 365d, "
                    "written 90s, 30m, 6h or 1d); a moved tag is built as the next generation, "
                    "and the current one stays served until that is whole. May change on a "
                    "built snapshot.",
                    pattern=r"^[0-9]{1,6}(s|m|h|d)$",
                ),
                "registries": prop(
                    "array",
                    f"Registries with their pull settings, at most {REGISTRIES_MAX}.",
                    items=ref(f"{p}Registry"),
                    maxItems=REGISTRIES_MAX,
                ),
                "ttlDaysAfterCreated": prop(
                    "integer",
                    "Days to keep the snapshot after creation; 0 keeps it forever.",
                    format="int32",
                    minimum=0,
                    maximum=10000,
                ),
            },
            "required": ["images"],
        },
        f"{p}BuildingConfig": {
            "type": "object",
            "description": "BuildingConfig defines the config of the job building the snapshot.",
            "properties": {
                "autoCreateEIP": prop("boolean", "Accepted and kept; not used here."),
                "autoCreateEIPAttribute": prop("object", "Accepted and kept; not used here."),
                "dnsServers": strings("DNS servers for pulling images; kept."),
                "eipID": prop("string", "Accepted and kept; not used here."),
                "namespace": prop(
                    "string", "Namespace of the registries' imagePullSecrets (default)."
                ),
                "timeoutMinutes": prop(
                    "integer",
                    "Minutes the build may take (30-10080, default 1440).",
                    format="int32",
                    minimum=30,
                    maximum=10080,
                    default=TIMEOUT_DEFAULT,
                ),
            },
        },
        f"{p}ImageReference": {
            "type": "object",
            "description": "One image to snapshot.",
            "properties": {"image": prop("string", "Image reference, e.g. nginx:stable.")},
            "required": ["image"],
        },
        f"{p}Registry": {
            "type": "object",
            "description": "How to reach one registry.",
            "properties": {
                "imagePullSecret": prop(
                    "string", "A kubernetes.io/dockerconfigjson Secret holding the login."
                ),
                "insecureSkipVerify": prop("boolean", "Skip TLS certificate verification."),
                "plainHTTP": prop("boolean", "The registry speaks plain HTTP."),
                "server": prop("string", "Registry host, e.g. registry.example.com:5000."),
            },
            "required": ["server"],
        },
        f"{p}ImageSnapshotStatus": {
            "type": "object",
            "description": "Where the snapshot is in its lifecycle.",
            "properties": {
                "expireDateTime": prop("string", "When the TTL runs out.", format="date-time"),
                "images": prop("array", "The pulled images.", items=ref(f"{p}PulledImage")),
                "lastUpdatedTime": prop("string", "Last status change.", format="date-time"),
                "message": prop("string", "Why the snapshot is in this phase."),
                "phase": prop("string", "Creating, Available, Unavailable, Failed or Deleting."),
                "reason": prop("string", "A CamelCase reason for a failure."),
                "snapshotID": prop("string", "The snapshot's id (metadata.uid)."),
                "snapshotName": prop("string", "The snapshot's name."),
                "observedGeneration": prop(
                    "integer", "The generation (spec) this status is about.", format="int64"
                ),
                "conditions": prop(
                    "array",
                    "Ready: True once the snapshot is available.",
                    items=ref(f"{p}Condition"),
                ),
            },
        },
        f"{p}Condition": {
            "type": "object",
            "description": "One aspect of the snapshot's state.",
            "properties": {
                "type": prop("string", "Ready."),
                "status": prop("string", "True, False or Unknown."),
                "reason": prop("string", "CamelCase reason for the status."),
                "message": prop("string", "Details for humans."),
                "lastTransitionTime": prop(
                    "string", "When the phase last changed.", format="date-time"
                ),
                "observedGeneration": prop(
                    "integer", "The generation the condition is about.", format="int64"
                ),
            },
            "required": ["type", "status"],
        },
        f"{p}PulledImage": {
            "type": "object",
            "description": "One pulled image.",
            "properties": {
                "image": prop("string", "The image as the spec names it."),
                "digest": prop("string", "The manifest digest it resolved to."),
                "sizeBytes": prop("integer", "Bytes it takes.", format="int64"),
                "lastCheckedTime": prop(
                    "string",
                    "When the upstream was last asked what the tag stands for.",
                    format="date-time",
                ),
                "movedFrom": prop(
                    "string", "The digest the tag stood for before the last refresh moved it."
                ),
            },
        },
        f"{_META}ObjectMeta": {
            "type": "object",
            "description": "Standard object metadata.",
            "properties": {
                "annotations": string_map("Unstructured key/value metadata."),
                "creationTimestamp": prop("string", "When it was created.", format="date-time"),
                "deletionGracePeriodSeconds": prop(
                    "integer", "Grace period of a requested deletion.", format="int64"
                ),
                "deletionTimestamp": prop(
                    "string", "When deletion was requested.", format="date-time"
                ),
                "finalizers": strings("Must be empty before the object is removed."),
                "generateName": prop("string", "Prefix of a server-generated name."),
                "generation": prop("integer", "Generation of the spec.", format="int64"),
                "labels": string_map("Labels to select objects by."),
                "managedFields": prop(
                    "array", "Not tracked by this server.", items={"type": "object"}
                ),
                "name": prop("string", "Unique within the project."),
                "namespace": prop("string", "Empty: ImageSnapshots are cluster-scoped."),
                "ownerReferences": prop(
                    "array", "Objects this one depends on; kept.", items={"type": "object"}
                ),
                "resourceVersion": prop("string", "Opaque version for optimistic concurrency."),
                "selfLink": prop("string", "Deprecated; never set."),
                "uid": prop("string", "Unique id; the CCE image cache id."),
            },
        },
        f"{_META}ListMeta": {
            "type": "object",
            "description": "Standard list metadata.",
            "properties": {
                "continue": prop("string", "Token for the next page."),
                "remainingItemCount": prop("integer", "Items after this page.", format="int64"),
                "resourceVersion": prop("string", "Version of the list."),
                "selfLink": prop("string", "Deprecated; never set."),
            },
        },
    }


_STATUS = f"{_META}Status"
_QUERY_FOR_WRITES = (
    query_parameter(
        "dryRun", {"type": "string", "enum": ["All"]}, "All: validate and answer, store nothing."
    ),
    query_parameter(
        "fieldManager",
        {"type": "string", "maxLength": 128},
        "Who makes the change (required by apply patches).",
    ),
    query_parameter(
        "fieldValidation",
        {"type": "string", "enum": ["Ignore", "Warn", "Strict"]},
        "Strict refuses unknown fields; Ignore and Warn (the default) drop them.",
    ),
)
_QUERY_FOR_LIST = (
    query_parameter(
        "labelSelector",
        {"type": "string"},
        "Only objects whose labels match, e.g. app=web,tier!=db.",
    ),
    query_parameter(
        "fieldSelector",
        {"type": "string"},
        "Only objects whose fields match; metadata.name is supported.",
    ),
    query_parameter(
        "limit",
        {"type": "integer", "format": "int64", "minimum": 0},
        "At most this many items; 0 or none is all. The rest is under continue.",
    ),
    query_parameter(
        "continue", {"type": "string"}, "The token of a previous page's metadata.continue."
    ),
    query_parameter(
        "resourceVersion",
        {"type": "string", "pattern": "^[0-9]{0,19}$"},
        "A list is served at the newest version; a version beyond it is 400.",
    ),
    query_parameter(
        "resourceVersionMatch",
        {"type": "string", "enum": ["NotOlderThan", "Exact"]},
        "Exact answers 410 unless resourceVersion is the newest.",
    ),
)
_QUERY_FOR_DELETE = (
    _QUERY_FOR_WRITES[0],
    query_parameter("gracePeriodSeconds", {"type": "integer", "format": "int64", "minimum": 0}),
    query_parameter(
        "propagationPolicy",
        {"type": "string", "enum": ["Orphan", "Background", "Foreground"]},
        "Foreground answers 202, the others 200.",
    ),
)

# What each action answers besides the errors of every gated route (`error_codes`).
_EXTRA_ERRORS = {
    "list": (406, 410),
    "post": (409, 415, 422),
    "get": (404, 406),
    "put": (404, 409, 415, 422),
    "patch": (404, 409, 415, 422),
    "delete": (404, 409, 422),
}
_METHODS = {
    "list": "GET",
    "post": "POST",
    "get": "GET",
    "put": "PUT",
    "patch": "PATCH",
    "delete": "DELETE",
}


def _success(action: str) -> dict[str, Any]:
    snapshot = ref(f"{_SCHEMA_PREFIX}ImageSnapshot")
    if action == "list":
        listed = "The snapshots (a Table when Accept asks for one with as=Table)."
        return {"200": response(listed, ref(f"{_SCHEMA_PREFIX}ImageSnapshotList"))}
    if action == "post":
        return {"201": response("Created.", snapshot)}
    if action == "patch":
        return {
            "200": response("Changed.", snapshot),
            "201": response("Created (an apply patch of a snapshot that did not exist).", snapshot),
        }
    if action == "delete":
        return {
            "200": response("Deletion requested; shown until the worker released it.", snapshot),
            "202": response("Deletion requested (propagationPolicy Foreground).", snapshot),
        }
    return {"200": response("OK.", snapshot)}


def _operation(action: str, description: str) -> dict[str, Any]:
    method = _METHODS[action]
    operation: dict[str, Any] = {
        "description": description,
        "operationId": f"{action}CciV2ImageSnapshot",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": GROUP, "version": VERSION, "kind": KIND},
        "responses": {
            **_success(action),
            **error_responses(error_codes(method, *_EXTRA_ERRORS[action]), ref(_STATUS)),
        },
    }
    snapshot = {"schema": ref(f"{_SCHEMA_PREFIX}ImageSnapshot")}
    if action in ("post", "put"):
        operation["requestBody"] = {"content": {"application/json": snapshot}, "required": True}
        operation["parameters"] = list(_QUERY_FOR_WRITES)
    elif action == "patch":
        operation["requestBody"] = {
            "content": {
                MERGE_PATCH: snapshot,
                JSON_PATCH: {"schema": ref(f"{_META}Patch")},
                APPLY_PATCH: snapshot,
            },
            "required": True,
        }
        operation["parameters"] = list(_QUERY_FOR_WRITES)
    elif action == "list":
        operation["parameters"] = list(_QUERY_FOR_LIST)
    elif action == "delete":
        operation["requestBody"] = {
            "content": {"application/json": {"schema": ref(f"{_META}DeleteOptions")}},
            "required": False,
        }
        operation["parameters"] = list(_QUERY_FOR_DELETE)
    return operation


def _meta_schemas() -> dict[str, Any]:
    """Status (every error's body), the JSON patch and DeleteOptions."""
    return {
        _STATUS: {
            "type": "object",
            "description": "The body of every error: a Failure with its code and reason.",
            "required": ["kind", "apiVersion", "status", "message", "reason", "code"],
            "properties": {
                "kind": {"type": "string", "enum": ["Status"]},
                "apiVersion": {"type": "string", "enum": ["v1"]},
                "metadata": {"type": "object"},
                "status": {"type": "string", "enum": ["Failure"]},
                "message": prop("string", "What went wrong, for humans."),
                "reason": prop("string", "CamelCase: BadRequest, NotFound, Invalid, …"),
                "code": prop("integer", "The HTTP status.", format="int32"),
                "details": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "group": {"type": "string"},
                        "kind": {"type": "string"},
                        "causes": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["reason", "message", "field"],
                                "properties": {
                                    "reason": {"type": "string"},
                                    "message": {"type": "string"},
                                    "field": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        },
        f"{_META}Patch": {
            "type": "array",
            "description": "An RFC 6902 JSON patch.",
            "items": {
                "type": "object",
                "required": ["op", "path"],
                "properties": {
                    "op": {
                        "type": "string",
                        "enum": ["add", "remove", "replace", "move", "copy", "test"],
                    },
                    "path": {"type": "string"},
                    "from": {"type": "string"},
                    "value": {},
                },
            },
        },
        f"{_META}DeleteOptions": {
            "type": "object",
            "description": "How to delete; the query parameters of the same names also work.",
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string", "enum": ["DeleteOptions"]},
                "dryRun": {"type": "array", "items": {"type": "string", "enum": ["All"]}},
                "gracePeriodSeconds": {"type": "integer", "format": "int64", "minimum": 0},
                "propagationPolicy": {
                    "type": "string",
                    "enum": ["Orphan", "Background", "Foreground"],
                },
                "preconditions": {
                    "type": "object",
                    "description": "Delete only this uid / resourceVersion (else 409).",
                    "properties": {
                        "uid": {"type": "string"},
                        "resourceVersion": {"type": "string"},
                    },
                },
            },
        },
    }


def openapi_document() -> dict[str, Any]:
    base = f"/apis/{API_VERSION}/{PLURAL}"
    schemas = {**openapi_schemas(), **_meta_schemas()}
    schemas[f"{_SCHEMA_PREFIX}BuildingConfig"]["properties"]["autoCreateEIPAttribute"] = {
        "type": "object",
        "description": "Accepted and kept; not used here.",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    return {
        "openapi": "3.0.0",
        "info": {
            "title": "imagedepot cci/v2",
            "version": "v2",
            "description": "ImageSnapshots as kubectl and the kubernetes clients use them. "
            "Lists also stream events with ?watch=true (not described here).",
        },
        "paths": {
            base: {
                "get": _operation("list", "list ImageSnapshots"),
                "post": _operation("post", "create an ImageSnapshot"),
            },
            f"{base}/{{name}}": {
                "get": _operation("get", "read an ImageSnapshot"),
                "put": _operation("put", "replace an ImageSnapshot"),
                "patch": _operation("patch", "change an ImageSnapshot"),
                "delete": _operation("delete", "delete an ImageSnapshot"),
                "parameters": [path_parameter("name")],
            },
        },
        "components": {"schemas": schemas, "securitySchemes": SECURITY_SCHEMES},
        "security": SECURITY,
    }


def openapi_routes() -> list[Route]:
    encoded, digest = encode(openapi_document())
    index = {
        "paths": {
            f"apis/{API_VERSION}": {
                "serverRelativeURL": f"/openapi/v3/apis/{API_VERSION}?hash={digest}"
            }
        }
    }

    async def serve_index(_: Request) -> Response:
        return JSONResponse(index)

    async def serve_document(_: Request) -> Response:
        return Response(
            encoded,
            media_type="application/json",
            headers={"Cache-Control": "public, immutable", "ETag": f'"{digest}"'},
        )

    return [
        Route("/openapi/v3", public(serve_index), methods=["GET"]),
        Route(f"/openapi/v3/apis/{API_VERSION}", public(serve_document), methods=["GET"]),
    ]
