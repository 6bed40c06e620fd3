"""What happened to a cache, told as events: created, pulling (with bytes so far), each image
pulled with its digest and size, available, failed and why, deleting.

The events are read from the cache's own state rather than stored: every fact they state is
already recorded on the cache, so they cannot disagree with it, need no retention and vanish
with it. Kubernetes `Event`s and the console's history both tell these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from imagedepot.domain.caches import CacheStatus, ImageCache
from imagedepot.domain.eviction import EVICTED_REASON


@dataclass(frozen=True)
class CacheEvent:
    type: str
    """`Normal` or `Warning`, as Kubernetes spells them."""
    reason: str
    at: datetime
    message: str


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{size}B"


def history(cache: ImageCache) -> list[CacheEvent]:
    """What happened to `cache`, oldest first. Times are those the cache records (an image's
    "Pulled" is the moment the cache became available, when its digest was fixed)."""
    events = [
        CacheEvent(
            "Normal",
            "Created",
            cache.created_at,
            f"building {len(cache.spec.images)} image(s) within {cache.spec.size_gib} GiB",
        )
    ]
    if cache.status is CacheStatus.CREATING and any(p.size_bytes for p in cache.images):
        pulled = sum(p.pulled_bytes for p in cache.images)
        total = sum(p.size_bytes for p in cache.images)
        message = f"{human_bytes(pulled)} of {human_bytes(total)} pulled"
        events.append(CacheEvent("Normal", "Pulling", cache.updated_at, message))
    finished = cache.deletion_requested_at or cache.updated_at
    for progress in cache.images:
        if progress.done and progress.digest:
            message = (
                f"image {progress.image}: {progress.digest}, {human_bytes(progress.size_bytes)}"
            )
            events.append(CacheEvent("Normal", "Pulled", finished, message))
    for progress in cache.images:
        if progress.moved_from and progress.moved_at is not None:
            message = f"tag {progress.image} moved from {progress.moved_from} to {progress.digest}"
            events.append(CacheEvent("Normal", "TagMoved", progress.moved_at, message))
        if progress.upstream_error and progress.upstream_error_at is not None:
            message = (
                f"image {progress.image}: served the cached copy, the upstream check failed: "
                f"{progress.upstream_error}"
            )
            events.append(
                CacheEvent("Warning", "UpstreamUnavailable", progress.upstream_error_at, message)
            )
    if cache.status is CacheStatus.AVAILABLE:
        message = f"{len(cache.images)} image(s), {human_bytes(cache.total_bytes)}, ready to serve"
        events.append(CacheEvent("Normal", "Available", cache.updated_at, message))
    if cache.reason and cache.status in (CacheStatus.FAILED, CacheStatus.UNAVAILABLE):
        events.append(
            CacheEvent("Warning", cache.reason, cache.updated_at, cache.message or cache.reason)
        )
    if cache.deletion_requested_at is not None and cache.reason == EVICTED_REASON:
        events.append(
            CacheEvent("Warning", EVICTED_REASON, cache.deletion_requested_at, cache.message or "")
        )
    if cache.deletion_requested_at is not None:
        message = "releasing its blobs"
        if cache.data_released:
            message = "blobs released; waiting for finalizers " + ", ".join(cache.finalizers)
        events.append(CacheEvent("Normal", "Deleting", cache.deletion_requested_at, message))
    return events
