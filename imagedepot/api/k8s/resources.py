"""The `/apis/cci/v2/imagesnapshots` routes: list (with paging, selectors, tables and
`?watch=true` event streams), create, get, replace, patch and delete, following the
Kubernetes conventions (`resourceVersion` guards, dry runs, DeleteOptions preconditions,
deletion through the service's finalizer). This is where the dialect meets the cache
service; `routes` also gathers the discovery, OpenAPI, secret and match routes into the one
list the app mounts.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from imagedepot.api.context import ApiContext
from imagedepot.api.k8s.discovery import discovery_routes
from imagedepot.api.k8s.matching import match_routes
from imagedepot.api.k8s.names import API_VERSION, GROUP, KIND, LIST_KIND, PLURAL
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
from imagedepot.api.k8s.openapi import openapi_routes
from imagedepot.api.k8s.patches import JSON_PATCH, MERGE_PATCH, json_patch, merge_patch
from imagedepot.api.k8s.secrets import secret_routes
from imagedepot.api.k8s.selectors import (
    continue_key,
    continue_token,
    field_selector,
    int_param,
    label_selector,
    list_version,
    micros,
    micros_version,
)
from imagedepot.api.k8s.selectors import selected as selected_snapshots
from imagedepot.api.k8s.status import (
    Cause,
    StatusError,
    bad_request,
    invalid,
    not_found,
    render_error,
)
from imagedepot.api.k8s.tables import table, wants_table
from imagedepot.domain.caches import CacheSpec, ImageCache
from imagedepot.domain.errors import Conflict, InvalidInput, NotFound
from imagedepot.domain.identity import Principal

WATCH_POLL_SECONDS = 0.2
WATCH_DEFAULT_SECONDS = 1800
BOOKMARK_EVERY_SECONDS = 10.0


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
        selected = selected_snapshots(request, caches.list(principal))
        version = list_version(selected)
        token = request.query_params.get("continue")
        if token:
            after = continue_key(token)
            selected = [c for c in selected if (micros(c.created_at), c.id) > after]
        limit = int_param(request, "limit") or 0
        page = selected[:limit] if limit else selected
        meta: dict[str, Any] = {"resourceVersion": version}
        rest = len(selected) - len(page)
        if limit and rest > 0:
            meta["continue"] = continue_token(page[-1])
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
        timeout = int_param(request, "timeoutSeconds") or WATCH_DEFAULT_SECONDS
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
            after = micros_version(since)
            if since in ("", "0"):
                for cache in known.values():
                    yield event("ADDED", cache)
            elif after is not None:
                # From a list's version: what changed since that list (deletions excepted).
                for cache in known.values():
                    if micros(cache.created_at) > after:
                        yield event("ADDED", cache)
                    elif micros(cache.updated_at) > after:
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
                        "metadata": {"resourceVersion": list_version(list(current.values()))},
                    }
                    yield event("BOOKMARK", mark)

        return StreamingResponse(stream(), media_type="application/json")

    def create_snapshot(request: Request, raw: bytes, principal: Principal) -> Response:
        check_content_type(request)
        dry_run = _query_dry_run(request)
        parsed = parse_object(load_json(raw), strict=_strict(request))
        attempts = 1 if parsed.name else 5
        for _ in range(attempts):
            name = parsed.name or f"{parsed.generate_name}{suffix()}"
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
        grace = body.get("gracePeriodSeconds", int_param(request, "gracePeriodSeconds"))
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


def _metadata_setter(parsed: Parsed, now: datetime) -> Callable[[ImageCache], None]:
    labels, annotations = parsed.labels, stored_annotations(parsed)

    def change(cache: ImageCache) -> None:
        cache.update_metadata(labels, annotations, now)

    return change
