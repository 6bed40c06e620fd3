"""The `/apis/cci/v2/imagesnapshots` routes: list (with paging, selectors, tables and
`?watch=true` event streams), create, get, replace, patch and delete, following the
Kubernetes conventions (`resourceVersion` guards, dry runs, DeleteOptions preconditions,
deletion through the service's finalizer). This is where the dialect meets the cache
service; the package's `__init__` puts these routes in the list the app mounts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imagedepot.api.context import ApiContext
from imagedepot.api.k8s.names import API_VERSION, GROUP, LIST_KIND, PLURAL
from imagedepot.api.k8s.objects import (
    FIELD_NAMES,
    IMAGES_MAX,
    Parsed,
    check_content_type,
    load_json,
    parse_object,
    render,
    spec_changes,
    stored_annotations,
    suffix,
)
from imagedepot.api.k8s.patches import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    json_patch,
    merge_patch,
)
from imagedepot.api.k8s.selectors import (
    continuation,
    continue_token,
    int_param,
    resource_version_param,
    snapshot_filter,
)
from imagedepot.api.k8s.status import (
    Cause,
    StatusError,
    bad_request,
    invalid,
    not_found,
    render_error,
)
from imagedepot.api.k8s.tables import table, wants_table
from imagedepot.api.k8s.watch import watch_response
from imagedepot.api.wire import decimal_integer, is_json_type
from imagedepot.domain.caches import REBUILDABLE, CacheSpec, ImageCache
from imagedepot.domain.errors import Conflict, InvalidInput, NotFound
from imagedepot.domain.identity import Principal

PATCH_ATTEMPTS = 5


def _names_resource_version(patch: Any) -> bool:
    """Whether a merge or JSON patch sets metadata.resourceVersion (then a conflict stands)."""
    if isinstance(patch, dict):
        meta = patch.get("metadata")
        return isinstance(meta, dict) and "resourceVersion" in meta
    if isinstance(patch, list):
        return any(
            isinstance(op, dict) and op.get("path") == "/metadata/resourceVersion" for op in patch
        )
    return False


def _check_list_version(request: Request, head: int) -> None:
    """A list is always served at the newest revision: fine for any version the client may
    already have seen, an error where Kubernetes would answer from history we do not keep."""
    wanted = request.query_params.get("resourceVersion", "")
    match = request.query_params.get("resourceVersionMatch", "")
    if match and match not in ("NotOlderThan", "Exact"):
        raise bad_request(f"resourceVersionMatch must be NotOlderThan or Exact, got {match!r}")
    if match and wanted == "":
        raise bad_request("resourceVersionMatch is forbidden unless resourceVersion is provided")
    if wanted == "":
        return
    version = resource_version_param(wanted)
    if version > head:
        # Kubernetes answers 504 after waiting for a lagging cache; here nothing lags, so a
        # version from the future is bad input: 400, with the cause client-go looks for.
        raise StatusError(
            400,
            f"Too large resource version: {version}, current: {head}",
            reason="BadRequest",
            causes=[
                Cause("resourceVersion", "Too large resource version", "ResourceVersionTooLarge")
            ],
        )
    if match == "Exact" and version != head:
        raise StatusError(
            410,
            f"too old resource version: {version} ({head}); lists are served at the newest "
            "version only",
            reason="Expired",
        )


def _validated(spec: CacheSpec) -> CacheSpec:
    """`spec` if it keeps the CCI limits, else a 422 naming the field in CCI's spelling."""
    try:
        spec.validate(max_images=IMAGES_MAX, field_names=FIELD_NAMES)
    except InvalidInput as error:
        raise invalid(spec.name, [Cause(error.field or "spec", error.message)]) from None
    return spec


def _missing_secret(name: str, error: InvalidInput) -> StatusError:
    """The 422 for a spec naming a pull secret the project does not hold (the cache service
    refuses it, naming the field)."""
    where = error.field or "spec"
    message = error.message.removeprefix(f"{where}: ")
    return invalid(name, [Cause(where, message, "FieldValueNotFound")])


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


def snapshot_routes(context: ApiContext) -> list[Route]:
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
            return watch_response(request, principal, caches, clock)
        matches = snapshot_filter(request)
        found, revision = caches.list_at_revision(principal)
        _check_list_version(request, revision)
        selected = [cache for cache in found if matches(cache)]
        token = request.query_params.get("continue")
        if token:
            after = continuation(token)
            revision = after.revision
            selected = [cache for cache in selected if after.precedes(cache)]
        limit = int_param(request, "limit") or 0
        page = selected[:limit] if limit else selected
        meta: dict[str, Any] = {"resourceVersion": str(revision)}
        rest = len(selected) - len(page)
        if limit and rest > 0:
            meta["continue"] = continue_token(page[-1], revision)
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

    def create_snapshot(request: Request, raw: bytes, principal: Principal) -> Response:
        check_content_type(request)
        parsed = parse_object(load_json(raw), strict=_strict(request))
        return create_parsed(request, principal, parsed)

    def create_parsed(request: Request, principal: Principal, parsed: Parsed) -> Response:
        dry_run = _query_dry_run(request)
        attempts = 1 if parsed.name else 5
        for _ in range(attempts):
            name = parsed.name or f"{parsed.generate_name}{suffix()}"
            spec = _validated(replace(parsed.spec, name=name))
            if dry_run:
                try:
                    caches.check_pull_secrets(principal, spec, FIELD_NAMES)
                except InvalidInput as error:
                    raise _missing_secret(name, error) from None
                cache = ImageCache.new(principal.project_id, spec, clock.now())
                cache.labels, cache.annotations = parsed.labels, stored_annotations(parsed)
                cache.finalizers = parsed.finalizers
                return JSONResponse(render(cache), status_code=201)
            try:
                cache = caches.create(
                    principal,
                    spec,
                    max_images=IMAGES_MAX,
                    field_names=FIELD_NAMES,
                    labels=parsed.labels,
                    annotations=stored_annotations(parsed),
                    finalizers=parsed.finalizers,
                )
            except InvalidInput as error:
                raise _missing_secret(name, error) from None
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
            # One that is no revision number matches no object: a conflict, as in Kubernetes.
            expected = decimal_integer(parsed.resource_version)
            if expected is None:
                expected = -1
        labels, annotations = parsed.labels, stored_annotations(parsed)

        def change(cache: ImageCache) -> None:
            changes = spec_changes(cache, parsed)
            if changes and (
                cache.status not in REBUILDABLE or cache.deletion_requested_at is not None
            ):
                raise invalid(name, changes)
            if changes:
                # Nothing is built yet: the new spec replaces the old and the build starts over.
                # What the dialect does not show (CCE's cluster and pull secrets) is kept.
                spec = replace(
                    parsed.spec,
                    name=cache.spec.name,
                    cluster=cache.spec.cluster,
                    pull_secrets=cache.spec.pull_secrets,
                )
                cache.change_spec(_validated(spec), clock.now())
            elif parsed.spec.refresh_seconds != cache.spec.refresh_seconds:
                # How often it refreshes may change on a built snapshot too: its content stays.
                spec = replace(cache.spec, refresh_seconds=parsed.spec.refresh_seconds)
                cache.change_spec(_validated(spec), clock.now())
            try:
                cache.update_metadata(labels, annotations, clock.now(), parsed.finalizers)
            except InvalidInput as error:
                cause = Cause("metadata.finalizers", error.message, "FieldValueForbidden")
                raise invalid(name, [cause]) from None

        try:
            if dry_run:
                preview = copy.deepcopy(current)
                change(preview)
                if preview.generation != current.generation:
                    caches.check_pull_secrets(principal, preview.spec, FIELD_NAMES)
                return JSONResponse(render(preview))
            updated = caches.update_metadata(
                principal, current.id, change, expected, field_names=FIELD_NAMES
            )
        except InvalidInput as error:
            raise _missing_secret(name, error) from None
        except NotFound:
            raise not_found(name) from None
        except Conflict as error:
            raise StatusError(
                409,
                f'Operation cannot be fulfilled on {PLURAL}.{GROUP} "{name}": {error.message}',
                name=name,
            ) from None
        if updated.generation != current.generation:
            context.notify_worker()
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
        if media not in (MERGE_PATCH, JSON_PATCH, APPLY_PATCH):
            raise StatusError(
                415,
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}",
            )
        patch = load_json(raw)
        if media == APPLY_PATCH:
            return server_side_apply(request, principal, patch)
        if media == MERGE_PATCH and not isinstance(patch, dict):
            raise bad_request("a merge patch must be a JSON object")
        if media == MERGE_PATCH:
            return patch_current(request, principal, lambda obj: merge_patch(obj, patch), patch)
        return patch_current(request, principal, lambda obj: json_patch(obj, patch), patch)

    def server_side_apply(request: Request, principal: Principal, applied: Any) -> Response:
        """Server-side apply without managed fields: the applied configuration creates the
        snapshot when it is missing, and is otherwise merged into it (its labels,
        annotations and finalizers set; its spec must be the one the snapshot has)."""
        name = request.path_params["name"]
        if not request.query_params.get("fieldManager"):
            cause = Cause("fieldManager", "is required for apply requests", "FieldValueRequired")
            raise invalid(name, [cause])
        if not isinstance(applied, dict):
            raise bad_request(
                "an apply patch must be a JSON object (YAML that is not JSON is not read)"
            )
        applied.pop("status", None)
        meta = applied.get("metadata")
        if isinstance(meta, dict):
            meta.setdefault("name", name)
        try:
            caches.get_by_name(principal, name)
        except NotFound:
            parsed = parse_object(applied, strict=_strict(request))
            if parsed.name != name:
                raise bad_request(
                    f"the name of the object ({parsed.name}) does not match the name on the "
                    f"URL ({name})"
                ) from None
            return create_parsed(request, principal, parsed)
        return patch_current(request, principal, lambda obj: merge_patch(obj, applied), applied)

    def patch_current(
        request: Request, principal: Principal, patch_into: Callable[[Any], Any], patch: Any
    ) -> Response:
        """Apply a patch to the current object and save it. A patch that names no
        resourceVersion applies to whatever is current: when the worker wrote in between,
        it is applied again to the newer object."""
        pinned = _names_resource_version(patch)

        def apply_to_current() -> Response:
            current = lookup(principal, request.path_params["name"])
            patched = patch_into(render(current))
            if not isinstance(patched, dict):
                raise bad_request("the patched object is not a JSON object")
            return apply_update(request, principal, current, patched, _strict(request))

        for _ in range(PATCH_ATTEMPTS - 1):
            try:
                return apply_to_current()
            except StatusError as error:
                if pinned or error.code != 409:
                    raise
        return apply_to_current()

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
        grace = body.get("gracePeriodSeconds", int_param(request, "gracePeriodSeconds"))
        if grace is not None and (not is_json_type(grace, int) or grace < 0):
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
            preview = copy.deepcopy(current)
            preview.request_deletion(clock.now(), grace)
            return JSONResponse(render(preview), status_code=code)
        try:
            cache = caches.request_deletion(principal, current.id, check, grace)
        except NotFound:
            raise not_found(name) from None
        context.notify_worker()
        return JSONResponse(render(cache), status_code=code)

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
        Route(base, gate.route(collection, render_error), methods=list(collection)),
        Route(f"{base}/{{name}}", gate.route(item, render_error), methods=list(item)),
    ]
