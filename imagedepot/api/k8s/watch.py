"""`?watch=true` on the ImageSnapshot list: the Kubernetes event stream.

A watch starts either from the current state (no resourceVersion, or "0": one ADDED per
snapshot, then changes) or from a resourceVersion a list or an earlier event gave, and then
reads the store's change log after it, so deletions that happened while the client was away
are delivered too. History the log no longer keeps ends the stream with an ERROR event
(410 Expired), on which clients relist. With a selector, a snapshot that stops matching is
DELETED for this watcher and one that starts matching is ADDED, as Kubernetes does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from imagedepot.api.k8s.names import API_VERSION, KIND
from imagedepot.api.k8s.objects import render
from imagedepot.api.k8s.selectors import int_param, resource_version_param, snapshot_filter
from imagedepot.api.k8s.status import status_body
from imagedepot.api.k8s.tables import table, wants_table
from imagedepot.domain.caches import CacheChange, ChangeType, ImageCache
from imagedepot.domain.errors import Gone
from imagedepot.domain.identity import Principal
from imagedepot.ports import Clock
from imagedepot.services.caches import CacheService

POLL_SECONDS = 0.2
DEFAULT_TIMEOUT_SECONDS = 1800
BOOKMARK_EVERY_SECONDS = 10.0
INITIAL_EVENTS_END = "k8s.io/initial-events-end"


class _Visibility:
    """What this watcher has been told exists, so selector changes become ADDED/DELETED.

    A watch from the current state knows everything it was shown. One resumed from a
    revision does not know what the client's list held: a snapshot it has not seen yet is
    taken to be known to the client (MODIFIED, or DELETED once it no longer matches).
    """

    def __init__(self, matches: Callable[[ImageCache], bool], knows_all: bool) -> None:
        self._matches = matches
        self._knows_all = knows_all
        self._shown: dict[str, bool] = {}

    def initial(self, cache: ImageCache) -> bool:
        shown = self._matches(cache)
        self._shown[cache.id] = shown
        return shown

    def event_type(self, change: CacheChange) -> ChangeType | None:
        uid = change.cache.id
        was_shown = self._shown.get(uid, not self._knows_all)
        if change.type is not ChangeType.DELETED and self._matches(change.cache):
            self._shown[uid] = True
            if change.type is ChangeType.ADDED or not was_shown:
                return ChangeType.ADDED
            return ChangeType.MODIFIED
        self._shown[uid] = False
        return ChangeType.DELETED if was_shown else None


def watch_response(
    request: Request, principal: Principal, caches: CacheService, clock: Clock
) -> Response:
    params = request.query_params
    matches = snapshot_filter(request)
    as_table = wants_table(request)
    timeout = int_param(request, "timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS
    since = params.get("resourceVersion", "")
    if since not in ("", "0"):
        resource_version_param(since)
    bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
    send_initial = params.get("sendInitialEvents") in ("true", "1")
    from_now = since in ("", "0") or send_initial

    def event(kind: ChangeType | str, obj: dict[str, Any]) -> bytes:
        return json.dumps({"type": str(kind), "object": obj}).encode() + b"\n"

    def shown(cache: ImageCache) -> dict[str, Any]:
        if as_table:
            return table([cache], clock.now(), {"resourceVersion": str(cache.resource_version)})
        return render(cache)

    def bookmark(revision: int, initial_end: bool = False) -> bytes:
        metadata: dict[str, Any] = {"resourceVersion": str(revision)}
        if initial_end:
            metadata["annotations"] = {INITIAL_EVENTS_END: "true"}
        return event("BOOKMARK", {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata})

    async def stream() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_bookmark = loop.time()  # the first right after the initial events
        visibility = _Visibility(matches, knows_all=from_now)
        if from_now:
            current, cursor = await run_in_threadpool(caches.list_at_revision, principal)
            for cache in current:
                if visibility.initial(cache):
                    yield event(ChangeType.ADDED, shown(cache))
            if send_initial and bookmarks:
                yield bookmark(cursor, initial_end=True)
        else:
            cursor = int(since)
        while loop.time() < deadline:
            try:
                changes, cursor = await run_in_threadpool(caches.changes, principal, cursor)
            except Gone as error:
                yield event("ERROR", status_body(410, error.message, reason="Expired"))
                return
            for change in changes:
                kind = visibility.event_type(change)
                if kind is not None:
                    yield event(kind, shown(change.cache))
            if bookmarks and loop.time() >= next_bookmark:
                next_bookmark = loop.time() + BOOKMARK_EVERY_SECONDS
                yield bookmark(cursor)
            if not changes:
                await asyncio.sleep(POLL_SECONDS)

    return StreamingResponse(stream(), media_type="application/json")
