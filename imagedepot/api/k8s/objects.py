"""The ImageSnapshot object itself: how an ImageCache is rendered as one, and how a request
body is read back into the core's `CacheSpec` plus the metadata the dialect keeps (labels,
annotations, and the CCI-only extras stored in an annotation). Parsing collects every fault
of a body so that one 422 names all the fields at fault; the limits and field names it
checks against live here too, since both directions of the translation share them.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from starlette.requests import Request

from imagedepot.api.k8s.names import API_VERSION, KIND
from imagedepot.api.k8s.patches import JSON_PATCH, MERGE_PATCH
from imagedepot.api.k8s.status import Cause, StatusError, bad_request, invalid
from imagedepot.api.wire import JSON_TYPE_NAMES, is_json_type, json_body, utc_timestamp
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
    ImageProgress,
    RegistryAccess,
)
from imagedepot.domain.durations import format_duration, parse_duration
from imagedepot.domain.errors import InvalidInput

FINALIZER = "imagesnapshot.kubernetes.io/imagesnapshot-finalizer"
EXTRA_ANNOTATION = "imagedepot.io/cci-extra"
"""Where the CCI-only fields the core does not use (EIP settings, owner references) are kept;
hidden from the annotations a client sees."""
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
    refresh_interval="spec.refreshInterval",
    pull_secrets="spec.registries",
    registry_pull_secret="spec.registries[{index}].imagePullSecret",  # noqa: S106 - a field name
)
QUALIFIED_NAME_RE = re.compile(
    r"^(?:[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_BUILDING_EXTRAS = ("autoCreateEIP", "autoCreateEIPAttribute", "dnsServers", "eipID", "namespace")


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
        "creationTimestamp": utc_timestamp(cache.created_at),
    }
    # The service's finalizer is its own: shown until the blobs are released, never dropped
    # on a client's say-so (that would leak them).
    finalizers = [*([] if cache.data_released else [FINALIZER]), *cache.finalizers]
    if finalizers:
        metadata["finalizers"] = finalizers
    if cache.labels:
        metadata["labels"] = dict(cache.labels)
    if annotations:
        metadata["annotations"] = annotations
    if extras.get("ownerReferences"):
        metadata["ownerReferences"] = extras["ownerReferences"]
    deleted_at = cache.deletion_requested_at or deleting_now
    if deleted_at is not None:
        metadata["deletionTimestamp"] = utc_timestamp(deleted_at)
        metadata["deletionGracePeriodSeconds"] = cache.deletion_grace_seconds or 0
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
        "images": [_image_status(p) for p in cache.images if p.digest],
        "lastUpdatedTime": utc_timestamp(cache.updated_at),
        "snapshotID": cache.id,
        "snapshotName": spec.name,
    }
    status["observedGeneration"] = cache.generation
    status["conditions"] = [_ready_condition(cache, deleting=deleting_now is not None)]
    if cache.reason:
        status["reason"] = cache.reason
    if cache.message:
        status["message"] = cache.message
    if cache.expires_at is not None:
        status["expireDateTime"] = utc_timestamp(cache.expires_at)
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
            **(
                {"refreshInterval": format_duration(timedelta(seconds=spec.refresh_seconds))}
                if spec.refresh_seconds
                else {}
            ),
        },
        "status": status,
    }


def _image_status(progress: ImageProgress) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "image": progress.image,
        "digest": progress.digest,
        "sizeBytes": progress.size_bytes,
    }
    if progress.checked_at is not None:
        shown["lastCheckedTime"] = utc_timestamp(progress.checked_at)
    if progress.moved_from:
        shown["movedFrom"] = progress.moved_from
    return shown


def _ready_condition(cache: ImageCache, *, deleting: bool) -> dict[str, Any]:
    """The `Ready` condition tools such as `kubectl wait --for=condition=Ready` and GitOps
    health checks read: True once the snapshot is available and not being deleted."""
    phase = CacheStatus.DELETING if deleting else cache.status
    reasons = {
        CacheStatus.AVAILABLE: "Available",
        CacheStatus.CREATING: "Building",
        CacheStatus.DELETING: "Deleting",
    }
    reason = reasons.get(phase) or cache.reason or phase.value
    return {
        "type": "Ready",
        "status": "True" if phase is CacheStatus.AVAILABLE else "False",
        "reason": reason,
        "message": cache.message or "",
        "lastTransitionTime": utc_timestamp(cache.phase_since or cache.created_at),
        "observedGeneration": cache.generation,
    }


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
    """The body as JSON whatever the Content-Type said (the Python client sends none); None
    when it is empty, a 400 Status when it is not JSON."""
    return json_body(raw, allow_empty=True, error=bad_request, subject="the request body")


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
    finalizers: list[str] = field(default_factory=list)
    """Other parties' finalizers (the service's own is implied)."""
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
        if not is_json_type(value, kind):
            self.fail(where, f"must be {JSON_TYPE_NAMES[kind]}", "FieldValueTypeInvalid")
            return default
        return value

    def str_map(self, value: Any, where: str) -> dict[str, str]:
        mapping = self.typed(value, where, dict, {})
        if any(not isinstance(v, str) for v in mapping.values()):
            self.fail(where, "values must be strings", "FieldValueTypeInvalid")
            return {}
        return dict(mapping)


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
    for index, finalizer in enumerate(extra_finalizers):
        if not QUALIFIED_NAME_RE.match(finalizer) or len(finalizer.rpartition("/")[2]) > 63:
            reader.fail(
                f"metadata.finalizers[{index}]",
                f"{finalizer!r} is not a qualified name (an optional DNS prefix and '/', then "
                "at most 63 of A-Z, a-z, 0-9, '-', '_', '.', beginning and ending alphanumeric)",
            )
    owners = reader.typed(meta.get("ownerReferences"), "metadata.ownerReferences", list, [])

    spec_body = reader.obj(
        top.get("spec"),
        "spec",
        (
            "buildingConfig",
            "imageSnapshotSize",
            "images",
            "refreshInterval",
            "registries",
            "ttlDaysAfterCreated",
        ),
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
    refresh_text = reader.typed(spec_body.get("refreshInterval"), "spec.refreshInterval", str)
    refresh_seconds = 0
    if refresh_text is not None:
        try:
            refresh_seconds = int(
                parse_duration(refresh_text, "spec.refreshInterval").total_seconds()
            )
        except InvalidInput as error:
            reader.fail("spec.refreshInterval", error.message)
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
        refresh_seconds=refresh_seconds,
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
        finalizers=list(dict.fromkeys(extra_finalizers)),
        extras=extras,
    )


def stored_annotations(parsed: Parsed) -> dict[str, str]:
    annotations = dict(parsed.annotations)
    if parsed.extras:
        annotations[EXTRA_ANNOTATION] = json.dumps(parsed.extras, sort_keys=True)
    return annotations


def spec_changes(old: ImageCache, new: Parsed) -> list[Cause]:
    """The spec fields `new` would change (a built snapshot's spec never changes; one that is
    building or failed takes a new spec and builds it)."""
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
        Cause(where, "field is immutable once the snapshot is built")
        for where, was, wanted in pairs
        if was != wanted
    ]


def suffix() -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(secrets.choice(alphabet) for _ in range(5))
