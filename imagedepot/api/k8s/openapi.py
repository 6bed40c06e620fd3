"""The OpenAPI v3 description of ImageSnapshot that `kubectl explain` and client-side field
validation fetch from `/openapi/v3`, with the ranges this service enforces. It is a large,
static document, so it lives apart from the code that serves the objects it describes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imagedepot.api.auth import public
from imagedepot.api.k8s.names import API_VERSION, GROUP, KIND, LIST_KIND, PLURAL, VERSION
from imagedepot.api.k8s.objects import IMAGES_MAX, REGISTRIES_MAX
from imagedepot.api.k8s.patches import JSON_PATCH, MERGE_PATCH
from imagedepot.domain.caches import TIMEOUT_DEFAULT

_SCHEMA_PREFIX = "io.cci.api.pkg.apis.versioned.cci.v2."
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _prop(kind: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "description": description, **extra}


def _strings(description: str) -> dict[str, Any]:
    return _prop("array", description, items={"type": "string", "default": ""})


def _string_map(description: str) -> dict[str, Any]:
    return _prop("object", description, additionalProperties={"type": "string", "default": ""})


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
                "apiVersion": _prop("string", "APIVersion of this representation: cci/v2."),
                "kind": _prop("string", "Kind of this object: ImageSnapshot."),
                "metadata": {**_ref(f"{_META}ObjectMeta"), "description": "Standard metadata."},
                "spec": {
                    **_ref(f"{p}ImageSnapshotSpec"),
                    "description": "What the snapshot holds; immutable once built (a "
                    "building or failed snapshot takes a new spec and builds it again).",
                },
                "status": {
                    **_ref(f"{p}ImageSnapshotStatus"),
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
                "apiVersion": _prop("string", "cci/v2"),
                "kind": _prop("string", "ImageSnapshotList"),
                "items": {"type": "array", "items": _ref(f"{p}ImageSnapshot")},
                "metadata": _ref(f"{_META}ListMeta"),
            },
            "x-kubernetes-group-version-kind": [{**gvk[0], "kind": LIST_KIND}],
        },
        f"{p}ImageSnapshotSpec": {
            "type": "object",
            "description": "Specification of the images to snapshot and how to pull them.",
            "properties": {
                "buildingConfig": {
                    **_ref(f"{p}BuildingConfig"),
                    "description": "How the snapshot is built.",
                },
                "imageSnapshotSize": _prop(
                    "integer",
                    "Size budget of the snapshot in GiB (20-400).",
                    format="int32",
                    minimum=20,
                    maximum=400,
                    default=20,
                ),
                "images": _prop(
                    "array",
                    f"Images to snapshot, at most {IMAGES_MAX}.",
                    items=_ref(f"{p}ImageReference"),
                    maxItems=IMAGES_MAX,
                    minItems=1,
                ),
                "refreshInterval": _prop(
                    "string",
                    "imagedepot's extension: re-resolve the tags this often (10s to 365d, "
                    "written 90s, 30m, 6h or 1d); a moved tag is built as the next generation, "
                    "and the current one stays served until that is whole. May change on a "
                    "built snapshot.",
                    pattern=r"^[0-9]{1,6}(s|m|h|d)$",
                ),
                "registries": _prop(
                    "array",
                    f"Registries with their pull settings, at most {REGISTRIES_MAX}.",
                    items=_ref(f"{p}Registry"),
                    maxItems=REGISTRIES_MAX,
                ),
                "ttlDaysAfterCreated": _prop(
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
                "autoCreateEIP": _prop("boolean", "Accepted and kept; not used here."),
                "autoCreateEIPAttribute": _prop("object", "Accepted and kept; not used here."),
                "dnsServers": _strings("DNS servers for pulling images; kept."),
                "eipID": _prop("string", "Accepted and kept; not used here."),
                "namespace": _prop(
                    "string", "Namespace of the registries' imagePullSecrets (default)."
                ),
                "timeoutMinutes": _prop(
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
            "properties": {"image": _prop("string", "Image reference, e.g. nginx:stable.")},
            "required": ["image"],
        },
        f"{p}Registry": {
            "type": "object",
            "description": "How to reach one registry.",
            "properties": {
                "imagePullSecret": _prop(
                    "string", "A kubernetes.io/dockerconfigjson Secret holding the login."
                ),
                "insecureSkipVerify": _prop("boolean", "Skip TLS certificate verification."),
                "plainHTTP": _prop("boolean", "The registry speaks plain HTTP."),
                "server": _prop("string", "Registry host, e.g. registry.example.com:5000."),
            },
            "required": ["server"],
        },
        f"{p}ImageSnapshotStatus": {
            "type": "object",
            "description": "Where the snapshot is in its lifecycle.",
            "properties": {
                "expireDateTime": _prop("string", "When the TTL runs out.", format="date-time"),
                "images": _prop("array", "The pulled images.", items=_ref(f"{p}PulledImage")),
                "lastUpdatedTime": _prop("string", "Last status change.", format="date-time"),
                "message": _prop("string", "Why the snapshot is in this phase."),
                "phase": _prop("string", "Creating, Available, Unavailable, Failed or Deleting."),
                "reason": _prop("string", "A CamelCase reason for a failure."),
                "snapshotID": _prop("string", "The snapshot's id (metadata.uid)."),
                "snapshotName": _prop("string", "The snapshot's name."),
                "observedGeneration": _prop(
                    "integer", "The generation (spec) this status is about.", format="int64"
                ),
                "conditions": _prop(
                    "array",
                    "Ready: True once the snapshot is available.",
                    items=_ref(f"{p}Condition"),
                ),
            },
        },
        f"{p}Condition": {
            "type": "object",
            "description": "One aspect of the snapshot's state.",
            "properties": {
                "type": _prop("string", "Ready."),
                "status": _prop("string", "True, False or Unknown."),
                "reason": _prop("string", "CamelCase reason for the status."),
                "message": _prop("string", "Details for humans."),
                "lastTransitionTime": _prop(
                    "string", "When the phase last changed.", format="date-time"
                ),
                "observedGeneration": _prop(
                    "integer", "The generation the condition is about.", format="int64"
                ),
            },
            "required": ["type", "status"],
        },
        f"{p}PulledImage": {
            "type": "object",
            "description": "One pulled image.",
            "properties": {
                "image": _prop("string", "The image as the spec names it."),
                "digest": _prop("string", "The manifest digest it resolved to."),
                "sizeBytes": _prop("integer", "Bytes it takes.", format="int64"),
                "lastCheckedTime": _prop(
                    "string",
                    "When the upstream was last asked what the tag stands for.",
                    format="date-time",
                ),
                "movedFrom": _prop(
                    "string", "The digest the tag stood for before the last refresh moved it."
                ),
            },
        },
        f"{_META}ObjectMeta": {
            "type": "object",
            "description": "Standard object metadata.",
            "properties": {
                "annotations": _string_map("Unstructured key/value metadata."),
                "creationTimestamp": _prop("string", "When it was created.", format="date-time"),
                "deletionGracePeriodSeconds": _prop(
                    "integer", "Grace period of a requested deletion.", format="int64"
                ),
                "deletionTimestamp": _prop(
                    "string", "When deletion was requested.", format="date-time"
                ),
                "finalizers": _strings("Must be empty before the object is removed."),
                "generateName": _prop("string", "Prefix of a server-generated name."),
                "generation": _prop("integer", "Generation of the spec.", format="int64"),
                "labels": _string_map("Labels to select objects by."),
                "managedFields": _prop(
                    "array", "Not tracked by this server.", items={"type": "object"}
                ),
                "name": _prop("string", "Unique within the project."),
                "namespace": _prop("string", "Empty: ImageSnapshots are cluster-scoped."),
                "ownerReferences": _prop(
                    "array", "Objects this one depends on; kept.", items={"type": "object"}
                ),
                "resourceVersion": _prop("string", "Opaque version for optimistic concurrency."),
                "selfLink": _prop("string", "Deprecated; never set."),
                "uid": _prop("string", "Unique id; the CCE image cache id."),
            },
        },
        f"{_META}ListMeta": {
            "type": "object",
            "description": "Standard list metadata.",
            "properties": {
                "continue": _prop("string", "Token for the next page."),
                "remainingItemCount": _prop("integer", "Items after this page.", format="int64"),
                "resourceVersion": _prop("string", "Version of the list."),
                "selfLink": _prop("string", "Deprecated; never set."),
            },
        },
    }


def _operation(action: str, description: str, patch: bool = False) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "description": description,
        "operationId": f"{action}CciV2ImageSnapshot",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": GROUP, "version": VERSION, "kind": KIND},
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": _ref(f"{_SCHEMA_PREFIX}ImageSnapshot")}},
            }
        },
    }
    if action in ("post", "put", "patch"):
        types = [MERGE_PATCH, JSON_PATCH] if patch else ["application/json"]
        operation["requestBody"] = {
            "content": {
                media: {"schema": _ref(f"{_SCHEMA_PREFIX}ImageSnapshot")} for media in types
            },
            "required": True,
        }
        operation["parameters"] = [
            {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
            for name in ("dryRun", "fieldManager", "fieldValidation")
        ]
    return operation


def openapi_document() -> dict[str, Any]:
    base = f"/apis/{API_VERSION}/{PLURAL}"
    schemas = openapi_schemas()
    schemas[f"{_SCHEMA_PREFIX}BuildingConfig"]["properties"]["autoCreateEIPAttribute"] = {
        "type": "object",
        "description": "Accepted and kept; not used here.",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    return {
        "openapi": "3.0.0",
        "info": {"title": "imagedepot cci/v2", "version": "v2"},
        "paths": {
            base: {
                "get": _operation("list", "list ImageSnapshots"),
                "post": _operation("post", "create an ImageSnapshot"),
            },
            f"{base}/{{name}}": {
                "get": _operation("get", "read an ImageSnapshot"),
                "put": _operation("put", "replace an ImageSnapshot"),
                "patch": _operation("patch", "change an ImageSnapshot", patch=True),
                "delete": _operation("delete", "delete an ImageSnapshot"),
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            },
        },
        "components": {"schemas": schemas},
    }


def openapi_routes() -> list[Route]:
    document = openapi_document()
    encoded = json.dumps(document, sort_keys=True).encode()
    digest = hashlib.sha256(encoded).hexdigest()[:32].upper()
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
