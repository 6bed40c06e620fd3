"""Which snapshot a workload gets: size vs quantity, ties to the newest, Available only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from imagedepot.domain.caches import CacheSpec, CacheStatus, ImageCache, ImageProgress
from imagedepot.domain.matching import Strategy, best_match

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def snapshot(
    name: str, sizes: dict[str, int], *, age: int = 0, status: str = "Available"
) -> ImageCache:
    cache = ImageCache.new(
        "p", CacheSpec(name=name, images=tuple(sizes)), T0 + timedelta(minutes=age)
    )
    cache.images = [
        ImageProgress(image=i, digest="sha256:" + "0" * 64, size_bytes=s) for i, s in sizes.items()
    ]
    cache.status = CacheStatus(status)
    return cache


def test_size_prefers_bytes_and_quantity_prefers_images() -> None:
    big = snapshot("big", {"db:1": 900})
    many = snapshot("many", {"web:1": 100, "api:1": 100})
    wanted = ["docker.io/library/web:1", "api:1", "db:1"]
    chosen = best_match([big, many], wanted, Strategy.SIZE)
    assert chosen is not None
    assert chosen.cache.spec.name == "big"
    assert chosen.covered == ("db:1",)
    assert chosen.covered_bytes == 900
    by_count = best_match([big, many], wanted, Strategy.QUANTITY)
    assert by_count is not None
    assert by_count.cache.spec.name == "many"
    assert by_count.covered == ("docker.io/library/web:1", "api:1")


def test_ties_go_to_the_newest_and_only_available_counts() -> None:
    old = snapshot("old", {"web:1": 100}, age=0)
    new = snapshot("new", {"web:1": 100}, age=5)
    newest_but_failed = snapshot("failed", {"web:1": 100}, age=9, status="Failed")
    for strategy in Strategy:
        chosen = best_match([old, new, newest_but_failed], ["web:1"], strategy)
        assert chosen is not None
        assert chosen.cache.spec.name == "new"
    assert best_match([old], ["other:1"], Strategy.SIZE) is None
