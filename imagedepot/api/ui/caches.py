"""The console's cache pages: the project's caches with live progress, one cache in detail, a
form that creates one, and deletion; one Server-Sent Events stream per page carries every
change, read from the same change log as ImageSnapshot watches."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from imagedepot.api.ui.door import ConsoleDoor, Viewer, form_number, form_of
from imagedepot.api.ui.render import page, secure
from imagedepot.api.wire import decimal_integer
from imagedepot.domain.cache_history import history
from imagedepot.domain.caches import (
    SIZE_GIB_DEFAULT,
    CacheSpec,
    ChangeType,
    ImageCache,
)
from imagedepot.domain.errors import Gone, InvalidInput, Unauthenticated
from imagedepot.services.caches import CacheService

EVENT_POLL_SECONDS = 1.0
SESSION_RECHECK_SECONDS = 10.0
HEARTBEAT_SECONDS = 15.0


def cache_view(cache: ImageCache) -> dict[str, Any]:
    """What the pages and the event stream show of a cache."""
    size = sum(image.size_bytes or 0 for image in cache.images)
    pulled = sum(min(image.pulled_bytes or 0, image.size_bytes or 0) for image in cache.images)
    return {
        "id": cache.id,
        "name": cache.spec.name,
        "status": cache.status.value,
        "reason": cache.reason,
        "message": cache.message,
        "size_bytes": size,
        "pulled_bytes": pulled,
        "percent": 100 if cache.status.value == "Available" else _percent(pulled, size),
        "images": [
            {
                "image": image.image,
                "digest": image.digest,
                "size_bytes": image.size_bytes or 0,
                "pulled_bytes": image.pulled_bytes or 0,
                "percent": _percent(image.pulled_bytes or 0, image.size_bytes or 0),
            }
            for image in cache.images
        ]
        or [
            {"image": text, "digest": None, "size_bytes": 0, "pulled_bytes": 0, "percent": 0}
            for text in cache.spec.images
        ],
        "created_at": cache.created_at.isoformat(),
        "updated_at": cache.updated_at.isoformat(),
        "expires_at": None if cache.expires_at is None else cache.expires_at.isoformat(),
        "labels": dict(cache.labels),
        "annotations": dict(cache.annotations),
        "size_gib": cache.spec.size_gib,
        "retention_days": cache.spec.retention_days,
        "pull_secrets": list(cache.spec.pull_secrets),
        "history": [
            {
                "type": event.type,
                "reason": event.reason,
                "at": event.at.isoformat(),
                "message": event.message,
            }
            for event in history(cache)
        ],
    }


def _percent(part: int, whole: int) -> int:
    return 0 if whole <= 0 else min(100, int(part * 100 / whole))


def spec_from_form(form: dict[str, Any]) -> CacheSpec:
    """A cache spec from the create form; InvalidInput names the form field."""
    images = tuple(
        line.strip() for line in str(form.get("images", "")).splitlines() if line.strip()
    )
    secrets = tuple(part for part in str(form.get("pull_secrets", "")).replace(",", " ").split())
    return CacheSpec(
        name=str(form.get("name", "")).strip(),
        images=images,
        size_gib=form_number(form, "size_gib", default=SIZE_GIB_DEFAULT),
        retention_days=form_number(form, "retention_days", default=0),
        pull_secrets=secrets,
    )


def cache_routes(door: ConsoleDoor, caches: CacheService) -> list[Route]:
    async def list_page(
        request: Request,
        viewer: Viewer,
        form: dict[str, Any] | None = None,
        error: InvalidInput | None = None,
    ) -> Response:
        """The caches, newest first, and the create form (again with what was typed, and
        why it was refused, after a refusal)."""
        listed, revision = await run_in_threadpool(caches.list_at_revision, viewer.principal)
        values = {
            "viewer": viewer,
            "revision": revision,
            "caches": [cache_view(cache) for cache in reversed(listed)],
            "form": form or {},
            "error": error,
        }
        return page(request, "caches.html", values, status=400 if error else 200)

    async def create(request: Request, viewer: Viewer) -> Response:
        form = dict(await form_of(request))
        try:
            spec = spec_from_form(form)
            cache = await run_in_threadpool(caches.create, viewer.principal, spec)
        except InvalidInput as error:
            return await list_page(request, viewer, form, error)
        return secure(RedirectResponse(f"/ui/caches/{cache.id}", status_code=303))

    async def detail(request: Request, viewer: Viewer) -> Response:
        cache, revision = await run_in_threadpool(
            caches.get_at_revision, viewer.principal, request.path_params["cache_id"]
        )
        values = {"viewer": viewer, "cache": cache_view(cache), "revision": revision}
        return page(request, "cache.html", values)

    async def delete(request: Request, viewer: Viewer) -> Response:
        await run_in_threadpool(
            caches.request_deletion, viewer.principal, request.path_params["cache_id"]
        )
        return secure(RedirectResponse("/ui/caches", status_code=303))

    async def events(request: Request, viewer: Viewer) -> Response:
        # The page names the revision it was rendered at, and a reconnecting EventSource the
        # last one it saw: the stream goes on from there, so nothing between is lost.
        resumed = decimal_integer(
            request.headers.get("last-event-id") or request.query_params.get("after", "")
        )
        listed: list[ImageCache] = []
        if resumed is None or resumed < 0:
            listed, revision = await run_in_threadpool(caches.list_at_revision, viewer.principal)
        else:
            revision = resumed

        async def stream() -> AsyncIterator[str]:
            after = revision
            checked = beat = time.monotonic()
            yield "retry: 3000\n\n"
            # Without a revision to go on from, start with every cache as it is now.
            for cache in listed:
                body = {**cache_view(cache), "deleted": False}
                yield f"event: cache\ndata: {json.dumps(body)}\n\n"
            while not await request.is_disconnected():
                try:
                    changes, after = await run_in_threadpool(
                        caches.changes, viewer.principal, after
                    )
                except Gone:
                    yield "event: reload\ndata: {}\n\n"
                    return
                for change in changes:
                    body = cache_view(change.cache)
                    body["deleted"] = change.type is ChangeType.DELETED
                    yield f"id: {change.revision}\nevent: cache\ndata: {json.dumps(body)}\n\n"
                now = time.monotonic()
                if now - checked > SESSION_RECHECK_SECONDS:
                    checked = now
                    try:
                        await run_in_threadpool(door.viewer, request)
                    except Unauthenticated:
                        yield "event: signedout\ndata: {}\n\n"
                        return
                if now - beat > HEARTBEAT_SECONDS:
                    beat = now
                    yield f"id: {after}\n\n"  # keeps a reconnect's Last-Event-ID current
                await asyncio.sleep(EVENT_POLL_SECONDS)

        response = StreamingResponse(stream(), media_type="text/event-stream")
        response.headers["X-Accel-Buffering"] = "no"
        return secure(response)

    del_action = ("cce:imageCache:delete", delete)
    return [
        Route(
            "/caches",
            door.page(
                {
                    "GET": ("cce:imageCache:list", list_page),
                    "POST": ("cce:imageCache:create", create),
                }
            ),
            methods=["GET", "POST"],
        ),
        Route(
            "/caches/events",
            door.page({"GET": ("cce:imageCache:list", events)}),
            methods=["GET"],
        ),
        Route(
            "/caches/{cache_id}",
            door.page({"GET": ("cce:imageCache:get", detail)}),
            methods=["GET"],
        ),
        Route("/caches/{cache_id}/delete", door.page({"POST": del_action}), methods=["POST"]),
    ]
