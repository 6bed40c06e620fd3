"""Which caches make room under a project's quota of stored bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imagedepot.domain.caches import CacheSpec, CacheStatus, ImageCache
from imagedepot.domain.eviction import Holding, NoRoom, caches_to_evict, stored_bytes
from imagedepot.domain.upstreams import PIN_LABEL

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def holding(
    name: str,
    blobs: dict[str, int],
    *,
    used: int | None = None,
    status: CacheStatus = CacheStatus.AVAILABLE,
    pinned: bool = False,
) -> Holding:
    cache = ImageCache.new("p", CacheSpec(name, ("busybox",)), T0)
    cache.status = status
    cache.last_used_at = None if used is None else T0 + timedelta(hours=used)
    if pinned:
        cache.labels = {PIN_LABEL: "true"}
    return Holding(cache, blobs)


def test_a_shared_blob_counts_once() -> None:
    assert stored_bytes([{"a": 5, "b": 3}, {"b": 3, "c": 1}]) == 9


def test_nothing_is_evicted_while_it_fits() -> None:
    assert caches_to_evict(10, {"n": 2}, [holding("x", {"a": 8})]) == []


def test_least_recently_pulled_go_first_and_only_as_many_as_needed() -> None:
    old, older, recent = (
        holding("old", {"a": 4}, used=5),
        holding("older", {"b": 4}, used=1),
        holding("recent", {"c": 4}, used=9),
    )
    evicted = caches_to_evict(12, {"n": 4}, [old, older, recent])
    assert [cache.spec.name for cache in evicted] == ["older"]


def test_never_pulled_counts_as_oldest_and_shared_blobs_free_nothing() -> None:
    never = holding("never", {"a": 4})
    sharing = holding("sharing", {"b": 4, "n": 4}, used=0)
    evicted = caches_to_evict(8, {"n": 4}, [never, sharing])
    assert [cache.spec.name for cache in evicted] == ["never"]


def test_pinned_building_and_deleting_caches_are_never_evicted() -> None:
    others = [
        holding("pinned", {"a": 4}, pinned=True),
        holding("building", {"b": 4}, status=CacheStatus.CREATING),
        holding("going", {"c": 4}, status=CacheStatus.DELETING),
    ]
    with pytest.raises(NoRoom) as refused:
        caches_to_evict(10, {"n": 4}, others)
    assert "pinned: pinned" in refused.value.message
    assert "being built: building" in refused.value.message
    assert "8 bytes that cannot be evicted" in refused.value.message
    assert "needs 4 more" in refused.value.message
