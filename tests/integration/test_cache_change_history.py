"""How long the cache change log lasts, with a clock the test moves: the worker's chore
forgets changes older than CHANGES_KEPT (at most once a minute), and a watcher resuming from
before the cut is told its history is Gone."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from imagedepot.adapters.db.store import SqlMetadataStore
from imagedepot.domain.caches import CacheSpec, ChangeType
from imagedepot.domain.errors import Gone
from imagedepot.domain.identity import Principal, Role
from imagedepot.services.caches import CHANGES_KEPT, COMPACT_EVERY, CacheService
from tests.support.clock import MovableClock

PROJECT = Principal("project-1", Role.ADMIN, "cred-1")
OTHER = Principal("project-2", Role.ADMIN, "cred-2")


def spec(name: str) -> CacheSpec:
    return CacheSpec(name=name, images=("busybox:1.36",))


def test_old_changes_are_forgotten_and_resuming_before_them_is_gone(tmp_path: Path) -> None:
    clock = MovableClock()
    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        caches = CacheService(store, clock)
        _, start = caches.list_at_revision(PROJECT)
        old = caches.create(PROJECT, spec("old"))
        caches.create(OTHER, spec("theirs"))
        clock.current += CHANGES_KEPT + timedelta(seconds=1)
        new = caches.create(PROJECT, spec("new"))

        changes, caught_up = caches.changes(PROJECT, start)
        assert [(c.type, c.cache.spec.name) for c in changes] == [
            (ChangeType.ADDED, "old"),
            (ChangeType.ADDED, "new"),
        ]
        assert caught_up == new.resource_version

        assert caches.forget_changes() == 2  # "old" and the other project's
        # Not again within COMPACT_EVERY, even with more to forget.
        clock.current += CHANGES_KEPT
        assert caches.forget_changes() == 0
        clock.current += COMPACT_EVERY
        assert caches.forget_changes() == 1

        with pytest.raises(Gone, match="too old resource version"):
            caches.changes(PROJECT, start)
        with pytest.raises(Gone, match="too large resource version"):
            caches.changes(PROJECT, caught_up + 1)
        assert caches.changes(PROJECT, caught_up) == ([], caught_up)
        listed, revision = caches.list_at_revision(PROJECT)
        assert [c.spec.name for c in listed] == ["old", "new"]
        assert revision == caught_up
        assert old.resource_version < revision
    finally:
        store.close()


def test_a_long_history_is_read_in_pages(tmp_path: Path) -> None:
    clock = MovableClock()
    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        caches = CacheService(store, clock)
        for index in range(5):
            caches.create(PROJECT, spec(f"c{index}"))
        names: list[str] = []
        cursor = 0
        while True:
            page, cursor = caches.changes(PROJECT, cursor, limit=2)
            if not page:
                break
            names += [change.cache.spec.name for change in page]
        assert names == [f"c{index}" for index in range(5)]
    finally:
        store.close()
