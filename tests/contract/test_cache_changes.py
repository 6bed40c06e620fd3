"""The cache change log on SQLite and PostgreSQL: one global revision per write, the log a
watcher resumes from (deletions included), compaction, and the 0006 migration that starts it.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta

from alembic import command
from sqlalchemy import text

from imagedepot.adapters.db.store import SqlMetadataStore, _alembic_config, create_engine_for
from imagedepot.domain.caches import ChangeType, ImageCache
from tests.support.cache_records import T0, add, new_cache


def relabel(store: SqlMetadataStore, cache_id: str, value: str) -> ImageCache:
    with store.transaction() as uow:
        cache = uow.caches.get(cache_id)
        assert cache is not None
        read = cache.resource_version
        cache.update_metadata({"k": value}, {}, T0 + timedelta(seconds=1))
        assert uow.caches.save(cache, read)
        return cache


def test_every_write_takes_the_next_revision_and_is_logged(store: SqlMetadataStore) -> None:
    with store.transaction(read_only=True) as uow:
        start = uow.caches.revision()
    a, b, other = new_cache("a"), new_cache("b"), new_cache("c", project_id="p2")
    add(store, a, b, other)
    assert [a.resource_version, b.resource_version, other.resource_version] == [
        start + 1,
        start + 2,
        start + 3,
    ]
    changed = relabel(store, a.id, "v1")
    assert changed.resource_version == start + 4
    with store.transaction() as uow:
        assert uow.caches.remove(b.id, T0) is True
        assert uow.caches.remove(b.id, T0) is False
    with store.transaction(read_only=True) as uow:
        head = uow.caches.revision()
        changes = uow.caches.changes_after("p1", start, 100)
        stored = uow.caches.get(a.id)
    assert head == start + 5
    assert stored is not None
    assert stored.resource_version == start + 4
    assert [(c.revision, c.type, c.cache.spec.name) for c in changes] == [
        (start + 1, ChangeType.ADDED, "a"),
        (start + 2, ChangeType.ADDED, "b"),
        (start + 4, ChangeType.MODIFIED, "a"),
        (start + 5, ChangeType.DELETED, "b"),
    ]
    # The logged object is the cache as it was: labels, spec, times, all of it.
    assert changes[2].cache == stored
    assert changes[3].cache.resource_version == start + 5
    assert changes[3].cache.spec == b.spec


def test_changes_after_pages_and_is_per_project(store: SqlMetadataStore) -> None:
    caches = [new_cache(f"c{i}") for i in range(5)]
    add(store, *caches, new_cache("x", project_id="p2"))
    with store.transaction(read_only=True) as uow:
        first = uow.caches.changes_after("p1", 0, 2)
        rest = uow.caches.changes_after("p1", first[-1].revision, 100)
        theirs = uow.caches.changes_after("p2", 0, 100)
    assert [c.cache.spec.name for c in first + rest] == [f"c{i}" for i in range(5)]
    assert [c.cache.spec.name for c in theirs] == ["x"]


def test_a_lost_save_logs_nothing(store: SqlMetadataStore) -> None:
    cache = new_cache()
    add(store, cache)
    relabel(store, cache.id, "v1")
    with store.transaction() as uow:
        stale = uow.caches.get(cache.id)
        assert stale is not None
        stale.update_metadata({"k": "stale"}, {}, T0)
        assert uow.caches.save(stale, cache.resource_version) is False
    with store.transaction(read_only=True) as uow:
        logged = uow.caches.changes_after("p1", 0, 100)
    assert [c.cache.labels for c in logged] == [{}, {"k": "v1"}]


def test_compaction_forgets_old_changes_and_remembers_where_it_cut(
    store: SqlMetadataStore,
) -> None:
    old, new = new_cache("old"), new_cache("new", now=T0 + timedelta(minutes=30))
    add(store, old, new)
    with store.transaction() as uow:
        assert uow.caches.compact_changes(T0 + timedelta(minutes=1)) == 1
        assert uow.caches.compact_changes(T0 + timedelta(minutes=1)) == 0
    with store.transaction(read_only=True) as uow:
        assert uow.caches.compacted_revision() == old.resource_version
        assert [c.cache.spec.name for c in uow.caches.changes_after("p1", 0, 10)] == ["new"]


def test_writers_commit_in_revision_order(metadata_url: str) -> None:
    """A reader that saw revision N never later finds a change at or below N appear."""
    stores = [SqlMetadataStore(metadata_url) for _ in range(3)]
    try:
        seed = [new_cache(f"w{i}") for i in range(3)]
        add(stores[0], *seed)
        stop = threading.Event()
        failures: list[BaseException] = []

        def write(index: int) -> None:
            value = 0
            while not stop.is_set():
                value += 1
                try:
                    relabel(stores[index], seed[index].id, str(value))
                except BaseException as error:  # reported by the main thread
                    failures.append(error)
                    return

        writers = [threading.Thread(target=write, args=(i,)) for i in range(3)]
        for writer in writers:
            writer.start()
        seen: list[int] = []
        cursor = 0
        try:
            for _ in range(200):
                with stores[0].transaction(read_only=True) as uow:
                    head = uow.caches.revision()
                    changes = uow.caches.changes_after("p1", cursor, 10_000)
                seen += [change.revision for change in changes]
                cursor = head
        finally:
            stop.set()
            for writer in writers:
                writer.join()
        with stores[0].transaction(read_only=True) as uow:
            everything = [c.revision for c in uow.caches.changes_after("p1", 0, 100_000)]
        tail = [revision for revision in everything if revision <= cursor]
        assert not failures
        assert seen == tail
        assert len(seen) > 3
    finally:
        for opened in stores:
            opened.close()


def test_migration_0006_moves_finalizers_and_continues_the_versions(metadata_url: str) -> None:
    engine = create_engine_for(metadata_url)
    try:
        with engine.begin() as connection:
            command.upgrade(_alembic_config(connection), "0005")
        extra = {"finalizers": ["example.com/hold"], "ownerReferences": [{"name": "o"}]}
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO caches (id, project_id, name, spec, status, images, labels, "
                    "annotations, resource_version, generation, created_at, updated_at) "
                    "VALUES ('c1', 'p1', 'legacy', :spec, 'Available', '[]', '{}', :ann, 41, 1, "
                    ":t, :t)"
                ),
                {
                    "spec": json.dumps({"name": "legacy", "images": ["busybox:1"]}),
                    "ann": json.dumps({"imagedepot.io/cci-extra": json.dumps(extra), "a": "b"}),
                    "t": T0.replace(tzinfo=None),
                },
            )
    finally:
        engine.dispose()
    store = SqlMetadataStore(metadata_url)
    try:
        with store.transaction(read_only=True) as uow:
            cache = uow.caches.get("c1")
            assert uow.caches.revision() == 41
            assert uow.caches.compacted_revision() == 41
        assert cache is not None
        assert cache.finalizers == ["example.com/hold"]
        assert json.loads(cache.annotations["imagedepot.io/cci-extra"]) == {
            "ownerReferences": [{"name": "o"}]
        }
        assert cache.annotations["a"] == "b"
        assert cache.data_released is False
        assert relabel(store, "c1", "x").resource_version == 42
    finally:
        store.close()
