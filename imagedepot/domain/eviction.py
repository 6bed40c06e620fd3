"""Which caches make room when a project would go over its quota of stored bytes.

A project's stored bytes are the sizes of the distinct blobs its caches reference (a layer two
of its caches share counts once). When a build would take the project over its quota, its
least recently pulled caches go first (never pulled: by creation), until what is left plus
the build fits. A cache is never evicted while it is being built or deleted, when it is
pinned (the label or annotation `imagedepot.io/pinned: "true"`), or when it is the cache that
needs the room.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from imagedepot.domain.caches import CacheStatus, ImageCache
from imagedepot.domain.upstreams import PIN_LABEL

EVICTED_REASON = "Evicted"
"""The reason an evicted cache carries while it is deleted."""
EVICTABLE = frozenset({CacheStatus.AVAILABLE, CacheStatus.UNAVAILABLE, CacheStatus.FAILED})


@dataclass(frozen=True)
class Holding:
    cache: ImageCache
    blobs: Mapping[str, int]
    """Digest -> size of every blob the cache references."""


class NoRoom(Exception):
    """Evicting everything evictable would still leave the project over its quota."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def is_pinned(cache: ImageCache) -> bool:
    return "true" in (cache.labels.get(PIN_LABEL), cache.annotations.get(PIN_LABEL))


def stored_bytes(holdings: Sequence[Mapping[str, int]]) -> int:
    sizes: dict[str, int] = {}
    for blobs in holdings:
        sizes.update(blobs)
    return sum(sizes.values())


def caches_to_evict(
    quota: int, needed: Mapping[str, int], others: Sequence[Holding]
) -> list[ImageCache]:
    """The caches to evict, least recently pulled first, so that `others` left and `needed`
    fit `quota`; NoRoom (with the numbers) when no choice does."""
    kept = [holding for holding in others if holding.cache.status is not CacheStatus.DELETING]
    if stored_bytes([*(h.blobs for h in kept), needed]) <= quota:
        return []
    candidates = sorted(
        (h for h in kept if h.cache.status in EVICTABLE and not is_pinned(h.cache)),
        key=lambda h: (h.cache.last_used_at or h.cache.created_at, h.cache.created_at),
    )
    evicted: list[ImageCache] = []
    for candidate in candidates:
        kept.remove(candidate)
        evicted.append(candidate.cache)
        if stored_bytes([*(h.blobs for h in kept), needed]) <= quota:
            return evicted
    held = stored_bytes([h.blobs for h in kept])
    wanted = stored_bytes([*(h.blobs for h in kept), needed]) - held
    pinned = sorted(h.cache.spec.name for h in kept if is_pinned(h.cache))
    building = sorted(h.cache.spec.name for h in kept if h.cache.status is CacheStatus.CREATING)
    raise NoRoom(
        f"quota exceeded: the project may store {quota} bytes; it keeps {held} bytes that "
        f"cannot be evicted (pinned: {', '.join(pinned) or 'none'}; being built: "
        f"{', '.join(building) or 'none'}) and this needs {wanted} more"
    )
