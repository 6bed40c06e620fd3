"""The Kubernetes-style CCI v2 dialect: `ImageSnapshot` on `/apis/cci/v2/imagesnapshots`, plus
the discovery documents kubectl and the kubernetes client read before they call it.

An ImageSnapshot is the same ImageCache the CCE dialect shows (`metadata.uid` is the CCE id);
this module only translates shapes and follows the Kubernetes API conventions: errors are
`Status` objects, updates are guarded by `resourceVersion`, deletion goes through the
service's finalizer (the object stays visible with `deletionTimestamp` until the worker has
released its blobs), `kubectl get` gets a `Table`, and `?watch=true` streams events.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from imagedepot.api.auth import public
from imagedepot.api.context import ApiContext
from imagedepot.api.errors import finish, http_status
from imagedepot.domain.caches import (
    RETENTION_MAX,
    RETENTION_MIN,
    SIZE_GIB_DEFAULT,
    SIZE_GIB_MAX,
    SIZE_GIB_MIN,
    TIMEOUT_DEFAULT,
    TIMEOUT_MAX,
    TIMEOUT_MIN,
    CacheSpec,
    CacheStatus,
    FieldNames,
    ImageCache,
    RegistryAccess,
)
from imagedepot.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
)
from imagedepot.domain.identity import Principal
from imagedepot.domain.matching import Candidate, Strategy, best_match, coverage, normalise
from imagedepot.services.secrets import DOCKER_CONFIG_JSON, SecretSummary

GROUP, VERSION = "cci", "v2"
API_VERSION = f"{GROUP}/{VERSION}"
KIND, LIST_KIND = "ImageSnapshot", "ImageSnapshotList"
PLURAL, SINGULAR = "imagesnapshots", "imagesnapshot"
DOCKER_CONFIG_KEY = ".dockerconfigjson"
FINALIZER = "imagesnapshot.kubernetes.io/imagesnapshot-finalizer"
EXTRA_ANNOTATION = "imagedepot.io/cci-extra"
"""Where the CCI-only fields the core does not use (EIP settings, owner references, extra
finalizers) are kept; hidden from the annotations a client sees."""
IMAGES_MAX = REGISTRIES_MAX = 10
SIZE_RANGE = (SIZE_GIB_MIN, SIZE_GIB_MAX, SIZE_GIB_DEFAULT)
TTL_RANGE = (RETENTION_MIN, RETENTION_MAX, 0)
TIMEOUT_RANGE = (TIMEOUT_MIN, TIMEOUT_MAX, TIMEOUT_DEFAULT)
DEFAULT_NAMESPACE = "default"
FIELD_NAMES = FieldNames(
    name="metadata.name",
    images="spec.images",
    size_gib="spec.imageSnapshotSize",
    retention_days="spec.ttlDaysAfterCreated",
    timeout_minutes="spec.buildingConfig.timeoutMinutes",
    pull_secrets="spec.registries",
)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
WATCH_POLL_SECONDS = 0.2
WATCH_DEFAULT_SECONDS = 1800
BOOKMARK_EVERY_SECONDS = 10.0
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
}
_BUILDING_EXTRAS = ("autoCreateEIP", "autoCreateEIPAttribute", "dnsServers", "eipID", "namespace")


# --- errors -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cause:
    field: str
    message: str
    reason: str = "FieldValueInvalid"


class StatusError(DomainError):
    """An error already phrased as a Kubernetes `Status` (code, reason, details)."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        name: str | None = None,
        causes: Iterable[Cause] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.name = name
        self.causes = list(causes)


def status_body(
    code: int,
    message: str,
    reason: str | None = None,
    name: str | None = None,
    causes: Iterable[Cause] = (),
    kind: str = PLURAL,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
        "code": code,
    }
    details: dict[str, Any] = {}
    if name is not None:
        details.update(name=name, group=GROUP, kind=kind)
    cause_list = [{"reason": c.reason, "message": c.message, "field": c.field} for c in causes]
    if cause_list:
        details["causes"] = cause_list
    if details:
        body["details"] = details
    return body


def status_response(code: int, message: str, **kwargs: Any) -> JSONResponse:
    return JSONResponse(status_body(code, message, **kwargs), status_code=code)


def render_error(error: DomainError) -> Response:
    if isinstance(error, StatusError):
        return status_response(
            error.code, error.message, reason=error.reason, name=error.name, causes=error.causes
        )
    if isinstance(error, InvalidInput):
        causes = [Cause(error.field, error.message)] if error.field else []
        return status_response(422, error.message, causes=causes)
    return finish(status_response(http_status(error), error.message), error)


def bad_request(message: str) -> StatusError:
    return StatusError(400, message)


def not_found(name: str) -> StatusError:
    return StatusError(404, f'{PLURAL}.{GROUP} "{name}" not found', name=name)


def invalid(name: str, causes: list[Cause]) -> StatusError:
    summary = "; ".join(f"{c.field}: {c.message}" for c in causes)
    return StatusError(
        422, f'{KIND}.{GROUP} "{name}" is invalid: {summary}', name=name, causes=causes
    )


# --- rendering ----------------------------------------------------------------------------


def _time(value: datetime | None) -> str | None:
    return value.strftime(TIME_FORMAT) if value is not None else None


def _extras(cache: ImageCache) -> dict[str, Any]:
    raw = cache.annotations.get(EXTRA_ANNOTATION)
    if not raw:
        return {}
    try:
        extras = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return extras if isinstance(extras, dict) else {}


def render(cache: ImageCache, *, deleting_now: datetime | None = None) -> dict[str, Any]:
    """The ImageSnapshot of `cache`; `deleting_now` shows it as a dry-run deletion would."""
    extras = _extras(cache)
    spec = cache.spec
    annotations = {k: v for k, v in cache.annotations.items() if k != EXTRA_ANNOTATION}
    metadata: dict[str, Any] = {
        "name": spec.name,
        "uid": cache.id,
        "resourceVersion": str(cache.resource_version),
        "generation": cache.generation,
        "creationTimestamp": _time(cache.created_at),
        "finalizers": [FINALIZER, *extras.get("finalizers", [])],
    }
    if cache.labels:
        metadata["labels"] = dict(cache.labels)
    if annotations:
        metadata["annotations"] = annotations
    if extras.get("ownerReferences"):
        metadata["ownerReferences"] = extras["ownerReferences"]
    deleted_at = cache.deletion_requested_at or deleting_now
    if deleted_at is not None:
        metadata["deletionTimestamp"] = _time(deleted_at)
        metadata["deletionGracePeriodSeconds"] = 0
    building: dict[str, Any] = dict(extras.get("buildingConfig") or {})
    building["timeoutMinutes"] = spec.timeout_minutes
    registries = []
    for entry in spec.registries:
        item: dict[str, Any] = {"server": entry.server}
        if entry.pull_secret:
            item["imagePullSecret"] = entry.pull_secret.partition(":")[2]
        if entry.plain_http:
            item["plainHTTP"] = True
        if entry.insecure_skip_verify:
            item["insecureSkipVerify"] = True
        registries.append(item)
    status: dict[str, Any] = {
        "phase": CacheStatus.DELETING.value if deleting_now else cache.status.value,
        "images": [
            {"image": p.image, "digest": p.digest, "sizeBytes": p.size_bytes}
            for p in cache.images
            if p.digest
        ],
        "lastUpdatedTime": _time(cache.updated_at),
        "snapshotID": cache.id,
        "snapshotName": spec.name,
    }
    if cache.reason:
        status["reason"] = cache.reason
    if cache.message:
        status["message"] = cache.message
    if cache.expires_at is not None:
        status["expireDateTime"] = _time(cache.expires_at)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {
            "buildingConfig": building,
            "imageSnapshotSize": spec.size_gib,
            "images": [{"image": image} for image in spec.images],
            "registries": registries,
            "ttlDaysAfterCreated": spec.retention_days,
        },
        "status": status,
    }


# --- parsing ------------------------------------------------------------------------------


_BINARY_TYPES = ("application/vnd.kubernetes.protobuf", "application/cbor", "application/yaml")


def check_content_type(request: Request) -> None:
    """Bodies are read as JSON whatever the Content-Type (the Python client sends none), but
    an encoding that is surely not JSON is refused with 415, which makes client-go retry
    in JSON."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in _BINARY_TYPES:
        raise StatusError(
            415,
            f"the body of the request was in an unknown format - accepted media types "
            f"include: application/json, {JSON_PATCH}, {MERGE_PATCH}",
        )


def load_json(raw: bytes) -> Any:
    """The body as JSON whatever the Content-Type said (the Python client sends none)."""
    try:
        return json.loads(raw) if raw.strip() else None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bad_request(f"the request body is not valid JSON: {error}") from None


@dataclass
class Parsed:
    """An ImageSnapshot body as the core wants it: the spec, the metadata it keeps, and extras."""

    name: str
    generate_name: str | None
    spec: CacheSpec
    labels: dict[str, str]
    annotations: dict[str, str]
    resource_version: str | None
    uid: str | None
    extras: dict[str, Any] = field(default_factory=dict)


class _Reader:
    """Collects every problem of a body, so that one 422 names all the fields at fault."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.causes: list[Cause] = []
        self.unknown: list[str] = []

    def fail(self, where: str, message: str, reason: str = "FieldValueInvalid") -> None:
        self.causes.append(Cause(where, message, reason))

    def obj(self, value: Any, where: str, known: Iterable[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(where, "must be an object", "FieldValueTypeInvalid")
            return {}
        for key in value:
            if key not in known:
                self.unknown.append(f"{where}.{key}" if where else key)
        return value

    def typed(self, value: Any, where: str, kind: type, default: Any = None) -> Any:
        if value is None:
            return default
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            self.fail(where, f"must be {_TYPE_NAMES[kind]}", "FieldValueTypeInvalid")
            return default
        return value

    def str_map(self, value: Any, where: str) -> dict[str, str]:
        mapping = self.typed(value, where, dict, {})
        if any(not isinstance(v, str) for v in mapping.values()):
            self.fail(where, "values must be strings", "FieldValueTypeInvalid")
            return {}
        return dict(mapping)


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
}


def parse_object(body: Any, *, strict: bool = False) -> Parsed:
    """An ImageSnapshot from a request body; raises a 400/422 Status naming each bad field."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object (an ImageSnapshot)")
    reader = _Reader(strict)
    top = reader.obj(body, "", ("apiVersion", "kind", "metadata", "spec", "status"))
    if top.get("kind") not in (None, KIND):
        raise bad_request(f"kind {top.get('kind')!r} is not {KIND}")
    if top.get("apiVersion") not in (None, API_VERSION):
        raise bad_request(f"apiVersion {top.get('apiVersion')!r} is not {API_VERSION}")
    meta = reader.obj(
        top.get("metadata"),
        "metadata",
        (
            "name",
            "generateName",
            "namespace",
            "labels",
            "annotations",
            "finalizers",
            "ownerReferences",
            "resourceVersion",
            "uid",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ),
    )
    name = reader.typed(meta.get("name"), "metadata.name", str, "")
    generate_name = reader.typed(meta.get("generateName"), "metadata.generateName", str)
    labels = reader.str_map(meta.get("labels"), "metadata.labels")
    annotations = reader.str_map(meta.get("annotations"), "metadata.annotations")
    annotations.pop(EXTRA_ANNOTATION, None)
    finalizers = reader.typed(meta.get("finalizers"), "metadata.finalizers", list, [])
    extra_finalizers = [f for f in finalizers if f != FINALIZER]
    if any(not isinstance(f, str) for f in extra_finalizers):
        reader.fail("metadata.finalizers", "must be strings", "FieldValueTypeInvalid")
        extra_finalizers = []
    owners = reader.typed(meta.get("ownerReferences"), "metadata.ownerReferences", list, [])

    spec_body = reader.obj(
        top.get("spec"),
        "spec",
        ("buildingConfig", "imageSnapshotSize", "images", "registries", "ttlDaysAfterCreated"),
    )
    if "spec" not in top:
        reader.fail("spec", "Required value", "FieldValueRequired")
    building = reader.obj(
        spec_body.get("buildingConfig"),
        "spec.buildingConfig",
        ("timeoutMinutes", *_BUILDING_EXTRAS),
    )
    namespace = reader.typed(building.get("namespace"), "spec.buildingConfig.namespace", str)
    reader.typed(building.get("eipID"), "spec.buildingConfig.eipID", str)
    reader.typed(building.get("autoCreateEIP"), "spec.buildingConfig.autoCreateEIP", bool)
    reader.typed(
        building.get("autoCreateEIPAttribute"), "spec.buildingConfig.autoCreateEIPAttribute", dict
    )
    dns = reader.typed(building.get("dnsServers"), "spec.buildingConfig.dnsServers", list, [])
    if any(not isinstance(server, str) for server in dns):
        reader.fail("spec.buildingConfig.dnsServers", "must be strings", "FieldValueTypeInvalid")

    images_body = reader.typed(spec_body.get("images"), "spec.images", list, [])
    images: list[str] = []
    for index, item in enumerate(images_body):
        where = f"spec.images[{index}]"
        entry = reader.obj(item, where, ("image",))
        image = reader.typed(entry.get("image"), f"{where}.image", str)
        if image is None:
            reader.fail(f"{where}.image", "Required value", "FieldValueRequired")
        else:
            images.append(image)
    if len(images_body) > IMAGES_MAX:
        reader.fail(
            "spec.images",
            f"must have at most {IMAGES_MAX} items, got {len(images_body)}",
            "FieldValueTooMany",
        )
    registries_body = reader.typed(spec_body.get("registries"), "spec.registries", list, [])
    if len(registries_body) > REGISTRIES_MAX:
        reader.fail(
            "spec.registries",
            f"must have at most {REGISTRIES_MAX} items, got {len(registries_body)}",
            "FieldValueTooMany",
        )
    secret_namespace = namespace or DEFAULT_NAMESPACE
    registries: list[RegistryAccess] = []
    for index, item in enumerate(registries_body):
        where = f"spec.registries[{index}]"
        entry = reader.obj(
            item, where, ("server", "imagePullSecret", "plainHTTP", "insecureSkipVerify")
        )
        server = reader.typed(entry.get("server"), f"{where}.server", str)
        if not server:
            reader.fail(f"{where}.server", "Required value", "FieldValueRequired")
            continue
        secret = reader.typed(entry.get("imagePullSecret"), f"{where}.imagePullSecret", str)
        registries.append(
            RegistryAccess(
                server=server,
                plain_http=reader.typed(entry.get("plainHTTP"), f"{where}.plainHTTP", bool, False),
                insecure_skip_verify=reader.typed(
                    entry.get("insecureSkipVerify"), f"{where}.insecureSkipVerify", bool, False
                ),
                pull_secret=f"{secret_namespace}:{secret}" if secret else None,
            )
        )
    numbers = {}
    for where, value, (low, high, default) in (
        ("spec.imageSnapshotSize", spec_body.get("imageSnapshotSize"), SIZE_RANGE),
        ("spec.ttlDaysAfterCreated", spec_body.get("ttlDaysAfterCreated"), TTL_RANGE),
        ("spec.buildingConfig.timeoutMinutes", building.get("timeoutMinutes"), TIMEOUT_RANGE),
    ):
        number = reader.typed(value, where, int, default)
        if not low <= number <= high:
            reader.fail(where, f"must be between {low} and {high}, got {number}")
            number = default
        numbers[where] = number
    if reader.strict and reader.unknown:
        raise bad_request(
            "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in reader.unknown)
        )
    shown_name = name or generate_name or ""
    if not name and not generate_name:
        reader.fail("metadata.name", "name or generateName is required", "FieldValueRequired")
    spec = CacheSpec(
        name=name or "placeholder",
        images=tuple(images),
        size_gib=numbers["spec.imageSnapshotSize"],
        retention_days=numbers["spec.ttlDaysAfterCreated"],
        registries=tuple(registries),
        timeout_minutes=numbers["spec.buildingConfig.timeoutMinutes"],
    )
    if not any(c.reason == "FieldValueTypeInvalid" for c in reader.causes):
        # Within the limits, so that the rest of the spec (name, image references) is
        # checked too and every problem is named at once.
        checked = replace(spec, images=spec.images[:IMAGES_MAX])
        try:
            checked.validate(max_images=IMAGES_MAX, field_names=FIELD_NAMES)
        except InvalidInput as error:
            if error.field not in {c.field for c in reader.causes}:
                reader.fail(error.field or "spec", error.message)
    if reader.causes:
        raise invalid(shown_name, reader.causes)
    extras: dict[str, Any] = {}
    kept_building = {k: building[k] for k in _BUILDING_EXTRAS if building.get(k) is not None}
    if kept_building:
        extras["buildingConfig"] = kept_building
    if extra_finalizers:
        extras["finalizers"] = extra_finalizers
    if owners:
        extras["ownerReferences"] = owners
    return Parsed(
        name=name,
        generate_name=generate_name,
        spec=spec,
        labels=labels,
        annotations=annotations,
        resource_version=reader.typed(meta.get("resourceVersion"), "metadata.resourceVersion", str),
        uid=reader.typed(meta.get("uid"), "metadata.uid", str),
        extras=extras,
    )


def stored_annotations(parsed: Parsed) -> dict[str, str]:
    annotations = dict(parsed.annotations)
    if parsed.extras:
        annotations[EXTRA_ANNOTATION] = json.dumps(parsed.extras, sort_keys=True)
    return annotations


def spec_changes(old: ImageCache, new: Parsed) -> list[Cause]:
    """The spec fields `new` would change; a built snapshot's spec never changes."""
    before, after = old.spec, new.spec
    pairs = [
        ("spec.images", before.images, after.images),
        ("spec.registries", before.registries, after.registries),
        ("spec.imageSnapshotSize", before.size_gib, after.size_gib),
        ("spec.ttlDaysAfterCreated", before.retention_days, after.retention_days),
        ("spec.buildingConfig.timeoutMinutes", before.timeout_minutes, after.timeout_minutes),
        (
            "spec.buildingConfig",
            _extras(old).get("buildingConfig"),
            new.extras.get("buildingConfig"),
        ),
    ]
    return [
        Cause(where, "field is immutable once the snapshot is created")
        for where, was, wanted in pairs
        if was != wanted
    ]


# --- patches ------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"JSON pointer {path!r} must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _parent(document: Any, parts: list[str], path: str) -> tuple[Any, str]:
    node = document
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise StatusError(422, f"JSON patch path {path!r} does not exist")
    return node, parts[-1]


def _get(document: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return document
    parent, key = _parent(document, parts, path)
    if isinstance(parent, dict) and key in parent:
        return parent[key]
    if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
        return parent[int(key)]
    raise StatusError(422, f"JSON patch path {path!r} does not exist")


def _remove(document: Any, path: str) -> Any:
    parent, key = _parent(document, _pointer(path) or [""], path)
    if isinstance(parent, dict) and key in parent:
        return parent.pop(key)
    if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
        return parent.pop(int(key))
    raise StatusError(422, f"JSON patch cannot remove {path!r}: it does not exist")


def _add(document: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent, key = _parent(document, parts, path)
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list) and key == "-":
        parent.append(value)
    elif isinstance(parent, list) and key.isdigit() and int(key) <= len(parent):
        parent.insert(int(key), value)
    else:
        raise StatusError(422, f"JSON patch cannot add at {path!r}")
    return document


def json_patch(document: Any, operations: Any) -> Any:
    """RFC 6902 over a copy of `document`; any failing operation fails the whole patch."""
    if not isinstance(operations, list):
        raise bad_request("a JSON patch must be an array of operations")
    result = copy.deepcopy(document)
    for index, op in enumerate(operations):
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise bad_request(f"JSON patch operation {index} needs an 'op' and a 'path'")
        kind, path = op.get("op"), op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise bad_request(f"JSON patch operation {index} ({kind}) needs a 'value'")
        if kind == "add":
            result = _add(result, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(result, path)
        elif kind == "replace":
            _get(result, path)
            if _pointer(path):
                _remove(result, path)
            result = _add(result, path, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            source = op.get("from")
            if not isinstance(source, str):
                raise bad_request(f"JSON patch operation {index} ({kind}) needs a 'from'")
            value = (
                _remove(result, source) if kind == "move" else copy.deepcopy(_get(result, source))
            )
            result = _add(result, path, value)
        elif kind == "test":
            if _get(result, path) != op["value"]:
                raise StatusError(422, f"JSON patch test failed at {path!r}")
        else:
            raise bad_request(f"JSON patch operation {index} has an unknown op {kind!r}")
    return result


# --- selectors and paging -----------------------------------------------------------------

_REQUIREMENT = re.compile(
    r"^\s*(?P<key>[A-Za-z0-9_./-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9_.-]*)"
    r"|\s+(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?\s*$"
)


def _split_requirements(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part for part in parts if part.strip()]


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "exists":
            return value is not None
        if self.op == "!exists":
            return value is None
        if self.op in ("=", "in"):
            return value in self.values
        return value not in self.values


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[_Requirement, ...]

    def __call__(self, labels: dict[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def label_selector(selector: str) -> LabelSelector:
    """`a=b,c!=d,e,!f,g in (x,y),h notin (z)` as Kubernetes reads it."""
    requirements: list[_Requirement] = []
    for requirement in _split_requirements(selector):
        text = requirement.strip()
        if text.startswith("!"):
            requirements.append(_Requirement(text[1:].strip(), "!exists"))
            continue
        match = _REQUIREMENT.match(text)
        if match is None:
            raise bad_request(f"unable to parse requirement {text!r} of labelSelector")
        key, op = match["key"], match["op"]
        if op in ("=", "=="):
            requirements.append(_Requirement(key, "=", frozenset({match["value"]})))
        elif op == "!=":
            requirements.append(_Requirement(key, "!=", frozenset({match["value"]})))
        elif match["set"]:
            values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append(_Requirement(key, match["set"], values))
        else:
            requirements.append(_Requirement(key, "exists"))
    return LabelSelector(tuple(requirements))


@dataclass(frozen=True)
class NameSelector:
    equal: tuple[str, ...]
    unequal: tuple[str, ...]

    def __call__(self, name: str) -> bool:
        return all(name == v for v in self.equal) and all(name != v for v in self.unequal)


def field_selector(selector: str) -> NameSelector:
    """Only `metadata.name` (`=`, `==`, `!=`) is a supported field, as for custom resources."""
    equal: list[str] = []
    unequal: list[str] = []
    for requirement in _split_requirements(selector):
        match = re.fullmatch(r"\s*([A-Za-z.]+)\s*(==|=|!=)\s*([^,]*?)\s*", requirement)
        if match is None:
            raise bad_request(f"invalid fieldSelector requirement {requirement!r}")
        field_name, op, value = match.groups()
        if field_name != "metadata.name":
            raise bad_request(f'field label not supported: "{field_name}" (only metadata.name is)')
        (unequal if op == "!=" else equal).append(value)
    return NameSelector(tuple(equal), tuple(unequal))


def _continue_token(last: ImageCache) -> str:
    """Where the next page starts: after this object in (creation, uid) order, so objects
    removed meanwhile shift nothing."""
    key = {"after": [_micros(last.created_at), last.id]}
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _continue_key(token: str) -> tuple[int, str]:
    try:
        micros, uid = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise bad_request("the continue token is not valid") from None
    if not isinstance(micros, int) or not isinstance(uid, str):
        raise bad_request("the continue token is not valid")
    return micros, uid


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise bad_request(f"{name} must not be negative")
    return value


def _selected(request: Request, caches: list[ImageCache]) -> list[ImageCache]:
    labels = label_selector(request.query_params.get("labelSelector", ""))
    names = field_selector(request.query_params.get("fieldSelector", ""))
    return [c for c in caches if labels(c.labels) and names(c.spec.name)]


def _micros(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


def _list_version(caches: list[ImageCache]) -> str:
    """A list's resourceVersion: opaque to clients, the newest change the list reflects (in
    microseconds since the epoch; an object's own resourceVersion is its update counter)."""
    newest = max((c.updated_at for c in caches), default=None)
    return str(_micros(newest)) if newest else "1"


_LIST_VERSION_FLOOR = 10**12
"""Below this a resourceVersion is an object's counter, not a list's time: no replay."""


def _micros_version(version: str) -> int | None:
    """The time a list's resourceVersion stands for; None for anything else."""
    if not version.isdigit():
        return None
    value = int(version)
    return value if value >= _LIST_VERSION_FLOOR or value == 1 else None


# --- tables -------------------------------------------------------------------------------


def wants_table(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    first = accept.split(",")[0]
    return "as=Table" in first


def human_age(seconds: float) -> str:
    """kubectl's way of writing an age: 45s, 3m12s, 17m, 5h3m, 20h, 3d4h, 12d, 2y."""
    s = max(int(seconds), 0)
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 730:
        return f"{days}d"
    return f"{days // 365}y"


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{size}B"


_COLUMNS = [
    ("Name", "string", 0, "Name must be unique within a project."),
    ("Phase", "string", 0, "Where the snapshot is in its lifecycle."),
    ("Images", "integer", 0, "How many images the snapshot holds."),
    ("Size", "string", 0, "Bytes the images take (manifests, configs and layers)."),
    ("Age", "string", 0, "Time since the snapshot was created."),
    ("Budget", "string", 1, "spec.imageSnapshotSize, in GiB."),
    ("TTL", "string", 1, "spec.ttlDaysAfterCreated (0: kept forever)."),
    ("UID", "string", 1, "metadata.uid, the CCE image cache id."),
    ("Message", "string", 1, "Why the snapshot is in this phase."),
]


def table(caches: list[ImageCache], now: datetime, list_meta: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for cache in caches:
        rendered = render(cache)
        cells: list[Any] = [
            cache.spec.name,
            cache.status.value,
            len(cache.spec.images),
            human_bytes(cache.total_bytes),
            human_age((now - cache.created_at).total_seconds()),
            f"{cache.spec.size_gib}Gi",
            f"{cache.spec.retention_days}d",
            cache.id,
            cache.message or "",
        ]
        rows.append(
            {
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": rendered["metadata"],
                },
            }
        )
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": [
            {
                "name": name,
                "type": kind,
                "format": "name" if name == "Name" else "",
                "description": description,
                "priority": priority,
            }
            for name, kind, priority, description in _COLUMNS
        ],
        "rows": rows,
    }


# --- discovery ----------------------------------------------------------------------------

VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def _discovery(document: dict[str, Any]) -> Callable[[Request], Any]:
    async def endpoint(_: Request) -> Response:
        return JSONResponse(document)

    return public(endpoint)


SECRET_RESOURCE = {
    "name": "secrets",
    "singularName": "secret",
    "namespaced": True,
    "kind": "Secret",
    "verbs": ["create", "delete", "get", "list"],
}


def discovery_routes(with_secrets: bool) -> list[Route]:
    version = {"groupVersion": API_VERSION, "version": VERSION}
    documents: dict[str, dict[str, Any]] = {
        "/api": {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        },
        "/api/v1": {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": "v1",
            "resources": [SECRET_RESOURCE] if with_secrets else [],
        },
        "/apis": {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [{"name": GROUP, "versions": [version], "preferredVersion": version}],
        },
        f"/apis/{GROUP}": {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": GROUP,
            "versions": [version],
            "preferredVersion": version,
        },
        f"/apis/{API_VERSION}": {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": API_VERSION,
            "resources": [
                {
                    "name": PLURAL,
                    "singularName": SINGULAR,
                    "namespaced": False,
                    "kind": KIND,
                    "verbs": VERBS,
                    "shortNames": ["isnap"],
                    "categories": ["all"],
                },
                {
                    "name": "imagesnapshotmatches",
                    "singularName": "imagesnapshotmatch",
                    "namespaced": False,
                    "kind": "ImageSnapshotMatch",
                    "verbs": ["create"],
                },
            ],
        },
        "/version": {
            "major": "1",
            "minor": "32",
            "gitVersion": "v1.32.0+imagedepot",
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "2026-11-22T00:00:00Z",
            "goVersion": "",
            "compiler": "cpython",
            "platform": "linux/amd64",
        },
    }
    return [Route(path, _discovery(doc), methods=["GET"]) for path, doc in documents.items()]


# --- OpenAPI v3 ---------------------------------------------------------------------------

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
                    "description": "What the snapshot holds; immutable once created.",
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
            },
        },
        f"{p}PulledImage": {
            "type": "object",
            "description": "One pulled image.",
            "properties": {
                "image": _prop("string", "The image as the spec names it."),
                "digest": _prop("string", "The manifest digest it resolved to."),
                "sizeBytes": _prop("integer", "Bytes it takes.", format="int64"),
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


# --- routes -------------------------------------------------------------------------------


def _dry_run(values: list[str]) -> bool:
    for value in values:
        if value != "All":
            raise bad_request(f'unsupported dryRun value {value!r}; only "All" is supported')
    return bool(values)


def _query_dry_run(request: Request) -> bool:
    return _dry_run(request.query_params.getlist("dryRun"))


def _strict(request: Request) -> bool:
    mode = request.query_params.get("fieldValidation", "")
    if mode not in ("", "Ignore", "Warn", "Strict"):
        raise bad_request(f"fieldValidation must be Ignore, Warn or Strict, got {mode!r}")
    return mode == "Strict"


def _check_accept(request: Request) -> None:
    accept = request.headers.get("accept", "")
    if not accept:
        return
    types = [part.split(";")[0].strip() for part in accept.split(",")]
    if not any(t in ("application/json", "*/*", "application/*", "") for t in types):
        raise StatusError(406, f"only application/json is served, not {accept!r}")


def routes(context: ApiContext) -> list[Route]:
    caches = context.caches
    clock = context.gate.clock

    def lookup(principal: Principal, name: str) -> ImageCache:
        try:
            return caches.get_by_name(principal, name)
        except NotFound:
            raise not_found(name) from None

    def list_snapshots(request: Request, _: bytes, principal: Principal) -> Response:
        _check_accept(request)
        if request.query_params.get("watch") in ("true", "1"):
            context.gate.identity.authorize(principal, "cci:imagesnapshot:watch")
            return watch(request, principal)
        selected = _selected(request, caches.list(principal))
        version = _list_version(selected)
        token = request.query_params.get("continue")
        if token:
            after = _continue_key(token)
            selected = [c for c in selected if (_micros(c.created_at), c.id) > after]
        limit = _int_param(request, "limit") or 0
        page = selected[:limit] if limit else selected
        meta: dict[str, Any] = {"resourceVersion": version}
        rest = len(selected) - len(page)
        if limit and rest > 0:
            meta["continue"] = _continue_token(page[-1])
            meta["remainingItemCount"] = rest
        if wants_table(request):
            return JSONResponse(table(page, clock.now(), meta))
        return JSONResponse(
            {
                "apiVersion": API_VERSION,
                "kind": LIST_KIND,
                "metadata": meta,
                "items": [render(cache) for cache in page],
            }
        )

    def watch(request: Request, principal: Principal) -> Response:
        labels = label_selector(request.query_params.get("labelSelector", ""))
        names = field_selector(request.query_params.get("fieldSelector", ""))
        as_table = wants_table(request)
        timeout = _int_param(request, "timeoutSeconds") or WATCH_DEFAULT_SECONDS
        since = request.query_params.get("resourceVersion", "")
        bookmarks = request.query_params.get("allowWatchBookmarks") in ("true", "1")
        selector = request.query_params.get("fieldSelector", "")
        wanted_name = re.fullmatch(r"\s*metadata\.name\s*==?\s*([^,]+?)\s*", selector)

        def snapshot() -> dict[str, ImageCache]:
            return {
                c.id: c for c in caches.list(principal) if labels(c.labels) and names(c.spec.name)
            }

        def event(kind: str, cache: ImageCache | dict[str, Any]) -> bytes:
            if isinstance(cache, dict):
                obj = cache
            elif as_table:
                obj = table([cache], clock.now(), {"resourceVersion": str(cache.resource_version)})
            else:
                obj = render(cache)
            return json.dumps({"type": kind, "object": obj}).encode() + b"\n"

        async def stream() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            next_bookmark = loop.time()  # the first right after the initial events
            known = await run_in_threadpool(snapshot)
            after = _micros_version(since)
            if since in ("", "0"):
                for cache in known.values():
                    yield event("ADDED", cache)
            elif after is not None:
                # From a list's version: what changed since that list (deletions excepted).
                for cache in known.values():
                    if _micros(cache.created_at) > after:
                        yield event("ADDED", cache)
                    elif _micros(cache.updated_at) > after:
                        yield event("MODIFIED", cache)
            if since not in ("", "0") and not known and wanted_name:
                # Watching one name from a list that still had it: it is gone by now.
                gone = {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "metadata": {"name": wanted_name.group(1), "resourceVersion": since},
                }
                yield event("DELETED", gone)
            while loop.time() < deadline:
                await asyncio.sleep(WATCH_POLL_SECONDS)
                current = await run_in_threadpool(snapshot)
                for uid, cache in current.items():
                    before = known.get(uid)
                    if before is None:
                        yield event("ADDED", cache)
                    elif before.resource_version != cache.resource_version:
                        yield event("MODIFIED", cache)
                for uid, cache in known.items():
                    if uid not in current:
                        yield event("DELETED", cache)
                known = current
                if bookmarks and loop.time() >= next_bookmark:
                    next_bookmark = loop.time() + BOOKMARK_EVERY_SECONDS
                    mark = {
                        "apiVersion": API_VERSION,
                        "kind": KIND,
                        "metadata": {"resourceVersion": _list_version(list(current.values()))},
                    }
                    yield event("BOOKMARK", mark)

        return StreamingResponse(stream(), media_type="application/json")

    def create_snapshot(request: Request, raw: bytes, principal: Principal) -> Response:
        check_content_type(request)
        dry_run = _query_dry_run(request)
        parsed = parse_object(load_json(raw), strict=_strict(request))
        attempts = 1 if parsed.name else 5
        for _ in range(attempts):
            name = parsed.name or f"{parsed.generate_name}{_suffix()}"
            spec = CacheSpec(
                name=name,
                images=parsed.spec.images,
                size_gib=parsed.spec.size_gib,
                retention_days=parsed.spec.retention_days,
                registries=parsed.spec.registries,
                timeout_minutes=parsed.spec.timeout_minutes,
            )
            try:
                spec.validate(max_images=IMAGES_MAX, field_names=FIELD_NAMES)
            except InvalidInput as error:
                raise invalid(name, [Cause(error.field or "spec", error.message)]) from None
            if dry_run:
                cache = ImageCache.new(principal.project_id, spec, clock.now())
                cache.labels, cache.annotations = parsed.labels, stored_annotations(parsed)
                return JSONResponse(render(cache), status_code=201)
            try:
                cache = caches.create(
                    principal, spec, max_images=IMAGES_MAX, field_names=FIELD_NAMES
                )
            except Conflict as error:
                if error.field == "name" and not parsed.name:
                    continue
                if error.field == "name":
                    raise StatusError(
                        409,
                        f'{PLURAL}.{GROUP} "{name}" already exists',
                        reason="AlreadyExists",
                        name=name,
                    ) from None
                raise
            if parsed.labels or parsed.annotations or parsed.extras:
                cache = caches.update_metadata(
                    principal, cache.id, _metadata_setter(parsed, clock.now())
                )
            context.notify_worker()
            return JSONResponse(render(cache), status_code=201)
        raise StatusError(
            409,
            f"could not generate a unique name from {parsed.generate_name!r}",
            reason="AlreadyExists",
        )

    def get_snapshot(request: Request, _: bytes, principal: Principal) -> Response:
        _check_accept(request)
        cache = lookup(principal, request.path_params["name"])
        if wants_table(request):
            return JSONResponse(
                table([cache], clock.now(), {"resourceVersion": str(cache.resource_version)})
            )
        return JSONResponse(render(cache))

    def apply_update(
        request: Request, principal: Principal, current: ImageCache, body: Any, strict: bool
    ) -> Response:
        name = request.path_params["name"]
        dry_run = _query_dry_run(request)
        if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
            body["metadata"].setdefault("name", name)
        parsed = parse_object(body, strict=strict)
        if parsed.name != name:
            raise bad_request(
                f"the name of the object ({parsed.name}) does not match the name on the URL ({name})"
            )
        if parsed.uid is not None and parsed.uid != current.id:
            raise StatusError(
                409,
                f"Precondition failed: UID in precondition: {parsed.uid}, "
                f"UID in object meta: {current.id}",
                reason="Conflict",
                name=name,
            )
        expected: int | None = None
        if parsed.resource_version is not None:
            try:
                expected = int(parsed.resource_version)
            except ValueError:
                expected = -1
        changes = spec_changes(current, parsed)
        if changes:
            raise invalid(name, changes)
        labels, annotations = parsed.labels, stored_annotations(parsed)

        def change(cache: ImageCache) -> None:
            if spec_changes(cache, parsed):
                raise invalid(name, spec_changes(cache, parsed))
            cache.update_metadata(labels, annotations, clock.now())

        if dry_run:
            preview = copy.deepcopy(current)
            change(preview)
            return JSONResponse(render(preview))
        try:
            updated = caches.update_metadata(principal, current.id, change, expected)
        except NotFound:
            raise not_found(name) from None
        except Conflict as error:
            raise StatusError(
                409,
                f'Operation cannot be fulfilled on {PLURAL}.{GROUP} "{name}": {error.message}',
                name=name,
            ) from None
        return JSONResponse(render(updated))

    def replace_snapshot(request: Request, raw: bytes, principal: Principal) -> Response:
        check_content_type(request)
        current = lookup(principal, request.path_params["name"])
        body = load_json(raw)
        if isinstance(body, dict):
            meta = body.get("metadata")
            if isinstance(meta, dict) and not meta.get("resourceVersion"):
                cause = Cause(
                    "metadata.resourceVersion",
                    "must be specified for an update",
                    "FieldValueInvalid",
                )
                raise invalid(request.path_params["name"], [cause])
        return apply_update(request, principal, current, body, _strict(request))

    def patch_snapshot(request: Request, raw: bytes, principal: Principal) -> Response:
        media = request.headers.get("content-type", "").split(";")[0].strip()
        if media not in (MERGE_PATCH, JSON_PATCH):
            raise StatusError(
                415,
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {JSON_PATCH}, {MERGE_PATCH}",
            )
        current = lookup(principal, request.path_params["name"])
        rendered = render(current)
        patch = load_json(raw)
        if media == MERGE_PATCH:
            if not isinstance(patch, dict):
                raise bad_request("a merge patch must be a JSON object")
            patched = merge_patch(rendered, patch)
        else:
            patched = json_patch(rendered, patch)
        if not isinstance(patched, dict):
            raise bad_request("the patched object is not a JSON object")
        meta = patched.get("metadata")
        if (
            isinstance(meta, dict)
            and meta.get("resourceVersion") == rendered["metadata"]["resourceVersion"]
        ):
            # Unless the patch names a version itself, it applies to whatever is current.
            patch_meta = patch.get("metadata") if isinstance(patch, dict) else None
            if not (isinstance(patch_meta, dict) and "resourceVersion" in patch_meta):
                meta["resourceVersion"] = str(current.resource_version)
        return apply_update(request, principal, current, patched, _strict(request))

    def delete_snapshot(request: Request, raw: bytes, principal: Principal) -> Response:
        name = request.path_params["name"]
        body = load_json(raw) or {}
        if not isinstance(body, dict):
            raise bad_request("DeleteOptions must be a JSON object")
        if body.get("kind") not in (None, "DeleteOptions"):
            raise bad_request(f"kind {body.get('kind')!r} is not DeleteOptions")
        dry_values = body.get("dryRun") or request.query_params.getlist("dryRun")
        if not isinstance(dry_values, list) or not all(isinstance(v, str) for v in dry_values):
            raise bad_request("dryRun must be an array of strings")
        dry_run = _dry_run(dry_values)
        causes: list[Cause] = []
        grace = body.get("gracePeriodSeconds", _int_param(request, "gracePeriodSeconds"))
        if grace is not None and (
            isinstance(grace, bool) or not isinstance(grace, int) or grace < 0
        ):
            causes.append(Cause("gracePeriodSeconds", "must be a non-negative integer"))
        policy = body.get("propagationPolicy", request.query_params.get("propagationPolicy"))
        if policy is not None and policy not in ("Orphan", "Background", "Foreground"):
            causes.append(
                Cause(
                    "propagationPolicy",
                    f"must be Orphan, Background or Foreground, got {policy!r}",
                    "FieldValueNotSupported",
                )
            )
        preconditions = body.get("preconditions") or {}
        if not isinstance(preconditions, dict):
            causes.append(Cause("preconditions", "must be an object", "FieldValueTypeInvalid"))
            preconditions = {}
        if causes:
            raise StatusError(
                422,
                "DeleteOptions are invalid: "
                + "; ".join(f"{c.field}: {c.message}" for c in causes),
                name=name,
                causes=causes,
            )
        want_uid = preconditions.get("uid")
        want_version = preconditions.get("resourceVersion")

        def check(cache: ImageCache) -> None:
            if want_uid is not None and want_uid != cache.id:
                raise StatusError(
                    409,
                    f"Precondition failed: UID in precondition: {want_uid}, "
                    f"UID in object meta: {cache.id}",
                    reason="Conflict",
                    name=name,
                )
            if want_version is not None and str(want_version) != str(cache.resource_version):
                raise StatusError(
                    409,
                    f"Precondition failed: ResourceVersion in precondition: {want_version}, "
                    f"ResourceVersion in object meta: {cache.resource_version}",
                    reason="Conflict",
                    name=name,
                )

        current = lookup(principal, name)
        check(current)
        code = 202 if policy == "Foreground" else 200
        if dry_run:
            shown = render(current, deleting_now=current.deletion_requested_at or clock.now())
            return JSONResponse(shown, status_code=code)
        try:
            cache = caches.request_deletion(principal, current.id, check)
        except NotFound:
            raise not_found(name) from None
        context.notify_worker()
        shown = render(cache)
        if grace:
            shown["metadata"]["deletionGracePeriodSeconds"] = grace
        return JSONResponse(shown, status_code=code)

    gate = context.gate
    collection = {
        "GET": ("cci:imagesnapshot:list", list_snapshots),
        "POST": ("cci:imagesnapshot:create", create_snapshot),
    }
    item = {
        "GET": ("cci:imagesnapshot:get", get_snapshot),
        "PUT": ("cci:imagesnapshot:update", replace_snapshot),
        "PATCH": ("cci:imagesnapshot:patch", patch_snapshot),
        "DELETE": ("cci:imagesnapshot:delete", delete_snapshot),
    }
    base = f"/apis/{API_VERSION}/{PLURAL}"
    return [
        *discovery_routes(context.secrets is not None),
        *openapi_routes(),
        Route(base, gate.route(collection, render_error), methods=list(collection)),
        Route(f"{base}/{{name}}", gate.route(item, render_error), methods=list(item)),
        *secret_routes(context),
        *match_routes(context),
    ]


# --- matching -----------------------------------------------------------------------------

MATCH_KIND, MATCH_PLURAL = "ImageSnapshotMatch", "imagesnapshotmatches"
_ANNOTATION = "cci.io/image-snapshot-"


def _flag(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise StatusError(
        422, f"{where} must be true or false", causes=[Cause(where, "must be a bool")]
    )


@dataclass(frozen=True)
class MatchQuestion:
    images: tuple[str, ...]
    strategy: Strategy
    auto_match: bool
    name: str | None
    reject: bool
    create: bool


def parse_match(body: Any) -> MatchQuestion:
    """An ImageSnapshotMatch: spec fields, or the pod annotations CCI reads, spec winning."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body must be a JSON object (an {MATCH_KIND})")
    if body.get("kind") not in (None, MATCH_KIND):
        raise bad_request(f"kind {body.get('kind')!r} is not {MATCH_KIND}")
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    notes = meta.get("annotations") if isinstance(meta, dict) else None
    annotations: dict[str, Any] = notes if isinstance(notes, dict) else {}
    raw_spec = body.get("spec")
    spec: dict[str, Any] = raw_spec if isinstance(raw_spec, dict) else {}

    def pick(key: str, annotation: str, default: Any) -> tuple[Any, str]:
        if key in spec:
            return spec[key], f"spec.{key}"
        if _ANNOTATION + annotation in annotations:
            where = f"metadata.annotations[{_ANNOTATION}{annotation}]"
            return annotations[_ANNOTATION + annotation], where
        return default, f"spec.{key}"

    raw_images = spec.get("images")
    if not isinstance(raw_images, list) or not raw_images:
        raise StatusError(
            422,
            "spec.images: Required value",
            causes=[Cause("spec.images", "Required value", "FieldValueRequired")],
        )
    images: list[str] = []
    for index, item in enumerate(raw_images):
        image = item.get("image") if isinstance(item, dict) else item
        where = f"spec.images[{index}]"
        if not isinstance(image, str):
            raise StatusError(422, f"{where} must be an image", causes=[Cause(where, "invalid")])
        try:
            normalise(image, where)
        except InvalidInput as error:
            raise StatusError(422, error.message, causes=[Cause(where, error.message)]) from None
        images.append(image)
    strategy_value, where = pick("strategy", "usage-strategy", "size")
    try:
        strategy = Strategy(strategy_value)
    except ValueError:
        message = f"must be size or quantity, got {strategy_value!r}"
        raise StatusError(
            422, f"{where}: {message}", causes=[Cause(where, message, "FieldValueNotSupported")]
        ) from None
    name, _ = pick("snapshotName", "specified-name", None)
    auto_value, auto_where = pick("autoMatch", "auto-match", None)
    auto = None if auto_value is None else _flag(auto_value, auto_where)
    if name and auto:
        raise bad_request(
            "a specified snapshot name and auto-match exclude each other; ask for one"
        )
    reject_value, reject_where = pick("rejectIfNotAvailable", "reject-if-not-available", False)
    create_value, create_where = pick("createIfNotPresent", "create-if-not-present", False)
    return MatchQuestion(
        images=tuple(images),
        strategy=strategy,
        auto_match=not name if auto is None else auto,
        name=name if isinstance(name, str) and name else None,
        reject=_flag(reject_value, reject_where),
        create=_flag(create_value, create_where),
    )


def match_routes(context: ApiContext) -> list[Route]:
    caches = context.caches

    def answer(body: Any, result: str, candidate: Candidate | None, message: str) -> dict[str, Any]:
        status: dict[str, Any] = {"result": result, "message": message}
        if candidate is not None:
            status.update(
                snapshotName=candidate.cache.spec.name,
                snapshotUID=candidate.cache.id,
                coveredImages=list(candidate.covered),
                coveredBytes=candidate.covered_bytes,
            )
        shown = dict(body)
        shown.update(apiVersion=API_VERSION, kind=MATCH_KIND, status=status)
        shown.setdefault("metadata", {})
        return shown

    def create_match(request: Request, raw: bytes, principal: Principal) -> Response:
        check_content_type(request)
        body = load_json(raw)
        question = parse_match(body)
        assert isinstance(body, dict)
        if question.name is not None:
            found = caches.list(principal, question.name)
            usable = [c for c in found if c.status is CacheStatus.AVAILABLE]
            if usable:
                candidate = coverage(usable[0], question.images)
                shown = answer(body, "Matched", candidate, "the specified snapshot is available")
                return JSONResponse(shown, status_code=201)
            why = f'snapshot "{question.name}" is ' + (
                f"{found[0].status.value}" if found else "not found"
            )
            result = "Rejected" if question.reject else "NotMatched"
            return JSONResponse(answer(body, result, None, why), status_code=201)
        best = best_match(caches.list(principal), question.images, question.strategy)
        if best is not None:
            message = f"covers {len(best.covered)} of {len(question.images)} images"
            return JSONResponse(answer(body, "Matched", best, message), status_code=201)
        if question.create:
            context.gate.identity.authorize(principal, "cci:imagesnapshot:create")
            registries = (
                body["spec"].get("registries", []) if isinstance(body.get("spec"), dict) else []
            )
            parsed = parse_object(
                {
                    "metadata": {"generateName": "auto-"},
                    "spec": {
                        "images": [{"image": image} for image in question.images],
                        "registries": registries,
                    },
                }
            )
            for _ in range(5):
                spec = replace(parsed.spec, name=f"auto-{_suffix()}")
                try:
                    cache = caches.create(
                        principal, spec, max_images=IMAGES_MAX, field_names=FIELD_NAMES
                    )
                except Conflict as error:
                    if error.field == "name":
                        continue
                    raise
                context.notify_worker()
                candidate = Candidate(cache, (), 0)
                message = "no snapshot covered the images; one is being built"
                return JSONResponse(answer(body, "Created", candidate, message), status_code=201)
        result = "Rejected" if question.reject else "NotMatched"
        message = "no available snapshot holds any of the images"
        return JSONResponse(answer(body, result, None, message), status_code=201)

    actions = {"POST": ("cci:imagesnapshotmatch:create", create_match)}
    return [
        Route(
            f"/apis/{API_VERSION}/{MATCH_PLURAL}",
            context.gate.route(actions, render_error),
            methods=["POST"],
        )
    ]


# --- core v1 secrets ----------------------------------------------------------------------


def render_secret_error(error: DomainError) -> Response:
    """Secrets are core v1 objects: their Status names no group."""
    if isinstance(error, StatusError):
        body = status_body(error.code, error.message, reason=error.reason, causes=error.causes)
        if error.name is not None:
            body["details"] = {**body.get("details", {}), "name": error.name, "kind": "secrets"}
        return JSONResponse(body, status_code=error.code)
    return render_error(error)


def _secret_object(summary: SecretSummary, data: bytes | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": summary.name,
            "namespace": summary.namespace,
            "creationTimestamp": _time(summary.created_at),
        },
        "type": summary.type,
    }
    if data is not None:
        body["data"] = {DOCKER_CONFIG_KEY: base64.b64encode(data).decode()}
    return body


def parse_secret(body: Any, namespace: str) -> tuple[str, bytes]:
    """The name and `.dockerconfigjson` of a Secret body; 400/422 naming what is wrong."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object (a Secret)")
    if body.get("kind") not in (None, "Secret") or body.get("apiVersion") not in (None, "v1"):
        raise bad_request("the body must be a v1 Secret")
    raw_meta = body.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    name = meta.get("name")
    causes: list[Cause] = []
    if not isinstance(name, str) or not name:
        causes.append(Cause("metadata.name", "Required value", "FieldValueRequired"))
    if meta.get("namespace") not in (None, "", namespace):
        raise bad_request(
            f"the namespace of the object ({meta.get('namespace')}) does not match the "
            f"namespace on the URL ({namespace})"
        )
    if body.get("type") != DOCKER_CONFIG_JSON:
        causes.append(
            Cause(
                "type",
                f"only {DOCKER_CONFIG_JSON} secrets are stored, got {body.get('type')!r}",
                "FieldValueNotSupported",
            )
        )
    config: bytes | None = None
    data, string_data = body.get("data") or {}, body.get("stringData") or {}
    if isinstance(string_data, dict) and isinstance(string_data.get(DOCKER_CONFIG_KEY), str):
        config = string_data[DOCKER_CONFIG_KEY].encode()
    elif isinstance(data, dict) and isinstance(data.get(DOCKER_CONFIG_KEY), str):
        try:
            config = base64.b64decode(data[DOCKER_CONFIG_KEY], validate=True)
        except binascii.Error:
            causes.append(Cause(f"data[{DOCKER_CONFIG_KEY}]", "must be base64"))
    else:
        causes.append(Cause(f"data[{DOCKER_CONFIG_KEY}]", "Required value", "FieldValueRequired"))
    if causes or config is None or not isinstance(name, str):
        summary = "; ".join(f"{c.field}: {c.message}" for c in causes)
        raise StatusError(422, f'Secret "{name}" is invalid: {summary}', name=name, causes=causes)
    return name, config


PROTOBUF = "application/vnd.kubernetes.protobuf"
_PROTOBUF_MAGIC = b"k8s\x00"


def _protobuf_fields(buffer: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of one protobuf message (varint and length-delimited)."""
    fields: list[tuple[int, int | bytes]] = []
    position = 0

    def varint() -> int:
        nonlocal position
        value, shift = 0, 0
        while True:
            if position >= len(buffer) or shift > 63:
                raise bad_request("the protobuf body is truncated")
            byte = buffer[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while position < len(buffer):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields.append((number, varint()))
        elif wire == 2:
            length = varint()
            fields.append((number, buffer[position : position + length]))
            position += length
        elif wire in (1, 5):
            position += 8 if wire == 1 else 4
        else:
            raise bad_request(f"unsupported protobuf wire type {wire}")
    return fields


def _pb_text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise bad_request("the protobuf body has a number where text belongs")
    return value.decode("utf-8", errors="replace")


def _pb_bytes(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise bad_request("the protobuf body has a number where bytes belong")
    return value


def secret_from_protobuf(raw: bytes) -> dict[str, Any]:
    """A core v1 Secret sent as Kubernetes protobuf (kubectl does so for built-in types),
    read into its JSON shape: the `Unknown` envelope, then ObjectMeta name/namespace, data,
    type and stringData."""
    if not raw.startswith(_PROTOBUF_MAGIC):
        raise bad_request("the protobuf body lacks the k8s envelope")
    envelope = dict(_protobuf_fields(raw[len(_PROTOBUF_MAGIC) :]))
    type_meta = dict(_protobuf_fields(_pb_bytes(envelope.get(1, b""))))
    body: dict[str, Any] = {
        "apiVersion": _pb_text(type_meta.get(1, b"")) or None,
        "kind": _pb_text(type_meta.get(2, b"")) or None,
        "metadata": {},
        "data": {},
        "stringData": {},
    }
    for number, value in _protobuf_fields(_pb_bytes(envelope.get(2, b""))):
        if number == 1:
            meta = dict(_protobuf_fields(_pb_bytes(value)))
            for field_number, key in ((1, "name"), (2, "generateName"), (3, "namespace")):
                if field_number in meta:
                    body["metadata"][key] = _pb_text(meta[field_number])
        elif number in (2, 4):
            entry = dict(_protobuf_fields(_pb_bytes(value)))
            key = _pb_text(entry.get(1, b""))
            if number == 2:
                body["data"][key] = base64.b64encode(_pb_bytes(entry.get(2, b""))).decode()
            else:
                body["stringData"][key] = _pb_text(entry.get(2, b""))
        elif number == 3:
            body["type"] = _pb_text(value)
    return body


def secret_body(request: Request, raw: bytes) -> Any:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == PROTOBUF:
        return secret_from_protobuf(raw)
    check_content_type(request)
    return load_json(raw)


def secret_routes(context: ApiContext) -> list[Route]:
    service = context.secrets
    if service is None:
        return []
    identity = context.gate.identity

    def may_read(principal: Principal) -> bool:
        try:
            identity.authorize(principal, "secrets:get")
        except Forbidden:
            return False
        return True

    def list_secrets(request: Request, _: bytes, principal: Principal) -> Response:
        namespace = request.path_params["namespace"]
        reveal = may_read(principal)
        items = []
        for summary in service.summaries(principal.project_id, namespace):
            data = None
            if reveal:
                data = service.reveal(principal.project_id, namespace, summary.name)[1]
            items.append(_secret_object(summary, data))
        return JSONResponse(
            {"apiVersion": "v1", "kind": "SecretList", "metadata": {}, "items": items}
        )

    def create_secret(request: Request, raw: bytes, principal: Principal) -> Response:
        namespace = request.path_params["namespace"]
        name, config = parse_secret(secret_body(request, raw), namespace)
        if service.exists(principal.project_id, namespace, name):
            raise StatusError(
                409, f'secrets "{name}" already exists', reason="AlreadyExists", name=name
            )
        try:
            summary = service.put_docker_config(principal.project_id, namespace, name, config)
        except InvalidInput as error:
            where = error.field or "data"
            raise StatusError(
                422,
                f'Secret "{name}" is invalid: {where}: {error.message}',
                name=name,
                causes=[Cause(where, error.message)],
            ) from None
        context.notify_worker()
        shown = _secret_object(summary, config if may_read(principal) else None)
        return JSONResponse(shown, status_code=201)

    def get_secret(request: Request, _: bytes, principal: Principal) -> Response:
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        try:
            summary, data = service.reveal(principal.project_id, namespace, name)
        except NotFound:
            raise StatusError(404, f'secrets "{name}" not found', name=name) from None
        return JSONResponse(_secret_object(summary, data))

    def delete_secret(request: Request, _: bytes, principal: Principal) -> Response:
        namespace, name = request.path_params["namespace"], request.path_params["name"]
        try:
            service.delete(principal.project_id, namespace, name)
        except NotFound:
            raise StatusError(404, f'secrets "{name}" not found', name=name) from None
        return JSONResponse(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "kind": "secrets"},
            }
        )

    gate = context.gate
    collection = {
        "GET": ("secrets:list", list_secrets),
        "POST": ("secrets:create", create_secret),
    }
    item = {
        "GET": ("secrets:get", get_secret),
        "DELETE": ("secrets:delete", delete_secret),
    }
    base = "/api/v1/namespaces/{namespace}/secrets"
    return [
        Route(base, gate.route(collection, render_secret_error), methods=list(collection)),
        Route(f"{base}/{{name}}", gate.route(item, render_secret_error), methods=list(item)),
    ]


def _metadata_setter(parsed: Parsed, now: datetime) -> Callable[[ImageCache], None]:
    labels, annotations = parsed.labels, stored_annotations(parsed)

    def change(cache: ImageCache) -> None:
        cache.update_metadata(labels, annotations, now)

    return change


def _suffix() -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(secrets.choice(alphabet) for _ in range(5))


def is_k8s_path(path: str) -> bool:
    """Paths this dialect answers, so that the app renders their 404/405 as a Status."""
    return path in ("/api", "/apis", "/version") or path.startswith(("/api/", "/apis/", "/openapi"))


def http_error(code: int, message: str) -> Response:
    return status_response(code, message)


__all__ = ["http_error", "is_k8s_path", "render_error", "routes"]
