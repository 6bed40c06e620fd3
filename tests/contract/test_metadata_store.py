"""The MetadataStore contract, run unchanged on SQLite and on a real PostgreSQL 15.

Every test gets an empty database (a new SQLite file or a new PostgreSQL database), so the
tests are independent and can be run in any order.
"""

from __future__ import annotations

import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import SAWarning, StatementError

from imagedepot.adapters.db import tables
from imagedepot.adapters.db.store import SCHEMA_HEAD, SqlMetadataStore, database_url, migrate
from imagedepot.domain.caches import (
    CacheStatus,
    FailureReason,
    ImageCache,
    ImageProgress,
)
from imagedepot.domain.errors import Conflict
from imagedepot.domain.identity import Credential, Project, Role, hash_token, new_token
from imagedepot.ports import AuditEvent, AuditQuery, BlobInfo, BlobUsage, StoredSecret
from tests.support.cache_records import T0, add, get, new_cache

BUILDING = (CacheStatus.CREATING, CacheStatus.DELETING)


# --- schema -------------------------------------------------------------------------------


def test_opening_again_keeps_data_and_schema(metadata_url: str) -> None:
    first = SqlMetadataStore(metadata_url)
    cache = new_cache()
    add(first, cache)
    first.close()

    migrate(metadata_url)
    second = SqlMetadataStore(metadata_url)
    try:
        assert get(second, cache.id) == cache
        with second.transaction() as uow:
            versions = uow.connection.execute(text("SELECT version_num FROM alembic_version"))
            assert versions.scalars().all() == [SCHEMA_HEAD]
    finally:
        second.close()


def test_processes_starting_together_migrate_once(metadata_url: str) -> None:
    def open_and_close(_: int) -> None:
        SqlMetadataStore(metadata_url).close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(open_and_close, range(4)))
    opened = SqlMetadataStore(metadata_url)
    try:
        with opened.transaction() as uow:
            versions = uow.connection.execute(text("SELECT version_num FROM alembic_version"))
            assert versions.scalars().all() == [SCHEMA_HEAD]
    finally:
        opened.close()


def test_migrations_create_exactly_the_tables_module(store: SqlMetadataStore) -> None:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        with warnings.catch_warnings():
            # SQLite's reflection skips expression indexes (with this warning), and alembic
            # does not compare them; their names are compared below instead.
            warnings.filterwarnings(
                "ignore", "Skipped unsupported reflection of expression-based index", SAWarning
            )
            warnings.filterwarnings(
                "ignore", "autogenerate skipping metadata-specified expression-based", UserWarning
            )
            assert compare_metadata(context, tables.metadata) == []
        if connection.dialect.name == "sqlite":
            listed = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :table"
        else:
            listed = "SELECT indexname FROM pg_indexes WHERE tablename = :table"
        for table in tables.metadata.sorted_tables:
            made = set(connection.execute(text(listed), {"table": table.name}).scalars())
            declared = {index.name for index in table.indexes}
            assert declared <= made, table.name


def test_sqlite_connections_use_wal_foreign_keys_and_busy_timeout(tmp_path: Path) -> None:
    opened = SqlMetadataStore(f"sqlite:///{tmp_path}/deep/er/meta.db")
    try:
        with opened.transaction() as uow:
            pragma = uow.connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA busy_timeout").scalar() == 30000
    finally:
        opened.close()


def test_in_memory_sqlite_works() -> None:
    opened = SqlMetadataStore("sqlite://")
    try:
        cache = new_cache()
        add(opened, cache)
        assert get(opened, cache.id) == cache
    finally:
        opened.close()


def test_database_urls() -> None:
    assert database_url("postgresql://u:p@h:5/db").drivername == "postgresql+psycopg"
    assert database_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert database_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert database_url("sqlite:////x/y.db").database == "/x/y.db"
    with pytest.raises(ValueError, match="unsupported database"):
        SqlMetadataStore("mysql://u@h/db")


# --- caches -------------------------------------------------------------------------------


def test_add_and_get_round_trips_every_field(store: SqlMetadataStore) -> None:
    cache = new_cache(retention_days=3)
    cache.status = CacheStatus.FAILED
    cache.reason = FailureReason.NOT_FOUND.value
    cache.message = "image docker.io/library/nginx:1.25 not found — ünïcode"
    cache.images = [
        ImageProgress(image="a", digest="sha256:" + "b" * 64, size_bytes=10, pulled_bytes=4),
        ImageProgress(image="b", done=True, size_bytes=2**40, pulled_bytes=2**40),
    ]
    cache.labels = {"team": "x", "empty": ""}
    cache.annotations = {"k8s.io/a": '{"json": true}'}
    cache.resource_version = 7
    cache.generation = 3
    cache.deletion_requested_at = T0 + timedelta(hours=1)
    cache.last_used_at = T0 + timedelta(minutes=5, microseconds=1)
    add(store, cache)

    loaded = get(store, cache.id)
    assert loaded == cache
    assert loaded is not cache


def test_timestamps_come_back_aware_utc_and_exact(store: SqlMetadataStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    created = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=plus_two)
    cache = new_cache(now=created)
    cache.last_used_at = datetime(2030, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    add(store, cache)
    project = Project(id="p1", name="one", created_at=created)
    secret = StoredSecret("p1", "ns", "s", "t", b"x", created)
    with store.transaction() as uow:
        uow.identity.add_project(project)
        uow.secrets.put(secret)

    with store.transaction() as uow:
        loaded = uow.caches.get(cache.id)
        stored_project = uow.identity.project_by_id("p1")
        stored_secret = uow.secrets.get("p1", "ns", "s")
    assert loaded is not None
    assert stored_project is not None
    assert stored_secret is not None
    for value in (loaded.created_at, stored_project.created_at, stored_secret.created_at):
        assert value == created
        assert value.tzinfo is UTC
        assert value.microsecond == 678901
    assert loaded.last_used_at == cache.last_used_at
    assert loaded.last_used_at is not None
    assert loaded.last_used_at.tzinfo is UTC


def test_naive_datetimes_are_refused(store: SqlMetadataStore) -> None:
    cache = new_cache(now=datetime(2024, 1, 1))
    with pytest.raises(StatementError, match="naive datetime"), store.transaction() as uow:
        uow.caches.add(cache)


def test_get_is_scoped_to_the_project(store: SqlMetadataStore) -> None:
    cache = new_cache(project_id="p1")
    add(store, cache)
    with store.transaction() as uow:
        assert uow.caches.get(cache.id, "p1") == cache
        assert uow.caches.get(cache.id, "p2") is None
        assert uow.caches.get("no-such-id") is None


def test_list_is_oldest_first_filters_by_name_and_isolates_projects(
    store: SqlMetadataStore,
) -> None:
    newest = new_cache("c", now=T0 + timedelta(seconds=2))
    oldest = new_cache("a", now=T0)
    middle = new_cache("b", now=T0 + timedelta(microseconds=1))
    same_time = [new_cache(f"tie-{i}", now=T0 + timedelta(seconds=1)) for i in range(3)]
    other_project = new_cache("a", project_id="p2")
    add(store, newest, other_project, *same_time, oldest, middle)

    with store.transaction() as uow:
        listed = uow.caches.list("p1")
        by_name = uow.caches.list("p1", "a")
        missing = uow.caches.list("p1", "zzz")
        other = uow.caches.list("p2")
        nobody = uow.caches.list("p3")
    ties = sorted(same_time, key=lambda cache: cache.id)
    assert [c.id for c in listed] == [oldest.id, middle.id, *[c.id for c in ties], newest.id]
    assert by_name == [oldest]
    assert missing == []
    assert other == [other_project]
    assert nobody == []


def test_duplicate_name_is_a_conflict_and_the_transaction_stays_usable(
    store: SqlMetadataStore,
) -> None:
    first = new_cache("alpha")
    with store.transaction() as uow:
        uow.caches.add(first)
        with pytest.raises(Conflict) as raised:
            uow.caches.add(new_cache("alpha"))
        assert raised.value.field == "name"
        # The same name in another project is fine, and the unit of work carries on.
        uow.caches.add(new_cache("alpha", project_id="p2"))
        uow.caches.add(new_cache("beta"))

    with store.transaction() as uow:
        assert sorted(c.spec.name for c in uow.caches.list("p1")) == ["alpha", "beta"]
        assert [c.spec.name for c in uow.caches.list("p2")] == ["alpha"]
        with pytest.raises(Conflict):
            uow.caches.add(new_cache("beta"))
        assert len(uow.caches.list("p1")) == 2


def test_conflict_left_unhandled_rolls_back_the_whole_transaction(
    store: SqlMetadataStore,
) -> None:
    add(store, new_cache("alpha"))
    gamma = new_cache("gamma")
    with pytest.raises(Conflict):
        add(store, gamma, new_cache("alpha"))
    assert get(store, gamma.id) is None


def test_duplicate_id_is_a_conflict(store: SqlMetadataStore) -> None:
    cache = new_cache("alpha")
    add(store, cache)
    clone = new_cache("other")
    clone.id = cache.id
    with store.transaction() as uow:
        with pytest.raises(Conflict):
            uow.caches.add(clone)
        assert uow.caches.get(cache.id) == cache


def test_save_is_optimistic(store: SqlMetadataStore) -> None:
    cache = new_cache()
    add(store, cache)

    with store.transaction() as uow:
        current = uow.caches.get(cache.id)
        assert current is not None
        read_version = current.resource_version
        current.record_progress(
            [ImageProgress(image="x", size_bytes=5, pulled_bytes=1)], T0 + timedelta(seconds=1)
        )
        current.labels["k"] = "v"
        assert uow.caches.save(current, read_version) is True
    assert get(store, cache.id) == current

    stale = new_cache()
    stale.id = cache.id
    stale.labels = {"stale": "yes"}
    stale.touch(T0 + timedelta(seconds=2))
    with store.transaction() as uow:
        assert uow.caches.save(stale, read_version) is False
    assert get(store, cache.id) == current

    with store.transaction() as uow:
        assert uow.caches.remove(cache.id, T0) is True
        current.touch(T0 + timedelta(seconds=3))
        assert uow.caches.save(current, current.resource_version - 1) is False


def test_remove_twice(store: SqlMetadataStore) -> None:
    cache = new_cache()
    add(store, cache)
    with store.transaction() as uow:
        assert uow.caches.remove(cache.id, T0) is True
    with store.transaction() as uow:
        assert uow.caches.remove(cache.id, T0) is False
        assert uow.caches.get(cache.id) is None
        assert uow.caches.list("p1") == []


def test_an_exception_rolls_back_everything(store: SqlMetadataStore) -> None:
    kept = new_cache("kept")
    add(store, kept)
    dropped = new_cache("dropped")

    def write_then_fail() -> None:
        with store.transaction() as uow:
            uow.caches.add(dropped)
            assert uow.caches.remove(kept.id, T0)
            uow.blob_refs.add_refs(dropped.id, [BlobInfo("sha256:" + "1" * 64, 1, "m")])
            uow.secrets.put(StoredSecret("p1", "ns", "s", "t", b"c", T0))
            uow.identity.add_project(Project("p1", "one", T0))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()

    with store.transaction() as uow:
        assert uow.caches.get(dropped.id) is None
        assert uow.caches.get(kept.id) == kept
        assert uow.blob_refs.all_referenced() == set()
        assert uow.secrets.list("p1") == []
        assert uow.identity.project_by_id("p1") is None


# --- leases -------------------------------------------------------------------------------


def test_claim_takes_the_oldest_updated_cache_once(store: SqlMetadataStore) -> None:
    later = new_cache("later", now=T0 + timedelta(seconds=5))
    older = new_cache("older", now=T0)
    done = new_cache("done", now=T0 - timedelta(days=1))
    done.mark_available([], T0 - timedelta(days=1))
    add(store, later, older, done)
    now, until = T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)

    with store.transaction() as uow:
        first = uow.caches.claim(BUILDING, "a", now, until)
    with store.transaction() as uow:
        second = uow.caches.claim(BUILDING, "b", now, until)
    with store.transaction() as uow:
        third = uow.caches.claim(BUILDING, "c", now, until)
        assert uow.caches.claim((), "c", now, until) is None
        assert uow.caches.lease_holders() == ["a", "b"]
    assert first == older
    assert second == later
    assert third is None

    with store.transaction() as uow:
        assert uow.caches.claim((CacheStatus.AVAILABLE,), "c", now, until) == done


def test_an_expired_lease_can_be_claimed_by_another_holder(store: SqlMetadataStore) -> None:
    cache = new_cache()
    add(store, cache)
    with store.transaction() as uow:
        assert uow.caches.claim(BUILDING, "a", T0, T0 + timedelta(seconds=30)) == cache
    with store.transaction() as uow:
        assert uow.caches.claim(BUILDING, "b", T0 + timedelta(seconds=29), T0) is None
        # Exactly at lease_until the lease still holds.
        assert uow.caches.claim(BUILDING, "b", T0 + timedelta(seconds=30), T0) is None
    late = T0 + timedelta(seconds=31)
    with store.transaction() as uow:
        assert uow.caches.claim(BUILDING, "b", late, late + timedelta(seconds=30)) == cache
        assert uow.caches.lease_holders() == ["b"]
    with store.transaction() as uow:
        assert uow.caches.renew(cache.id, "a", late + timedelta(minutes=5)) is False
        assert uow.caches.renew(cache.id, "b", late + timedelta(minutes=5)) is True


def test_dead_holders_lose_their_leases(store: SqlMetadataStore) -> None:
    cache = new_cache()
    add(store, cache)
    until = T0 + timedelta(hours=1)
    with store.transaction() as uow:
        assert uow.caches.claim(BUILDING, "dead", T0, until) == cache
    with store.transaction() as uow:
        assert uow.caches.claim(BUILDING, "b", T0, until, ("other",)) is None
        assert uow.caches.claim(BUILDING, "b", T0, until, ("other", "dead")) == cache
        assert uow.caches.lease_holders() == ["b"]


def test_renew_and_release_touch_only_our_own_lease(store: SqlMetadataStore) -> None:
    cache = new_cache()
    add(store, cache)
    until = T0 + timedelta(seconds=30)
    with store.transaction() as uow:
        assert uow.caches.renew(cache.id, "a", until) is False
        assert uow.caches.claim(BUILDING, "a", T0, until) == cache
    with store.transaction() as uow:
        assert uow.caches.renew(cache.id, "b", T0 + timedelta(hours=1)) is False
        assert uow.caches.renew(cache.id, "a", T0 + timedelta(hours=1)) is True
        assert uow.caches.renew("no-such-id", "a", T0 + timedelta(hours=1)) is False
        uow.caches.release(cache.id, "b")
    later = T0 + timedelta(minutes=5)
    with store.transaction() as uow:
        # Renewed past `later`, and b's release did nothing.
        assert uow.caches.claim(BUILDING, "b", later, later) is None
        uow.caches.release(cache.id, "a")
        assert uow.caches.lease_holders() == []
    with store.transaction() as uow:
        assert uow.caches.claim(BUILDING, "b", later, later + timedelta(seconds=30)) == cache


def test_save_keeps_the_lease_and_claim_keeps_the_version(store: SqlMetadataStore) -> None:
    cache = new_cache()
    add(store, cache)
    with store.transaction() as uow:
        claimed = uow.caches.claim(BUILDING, "a", T0, T0 + timedelta(hours=1))
        assert claimed is not None
        assert claimed.resource_version == cache.resource_version
        assert claimed.updated_at == cache.updated_at
        version = claimed.resource_version
        claimed.mark_available([], T0 + timedelta(seconds=1))
        assert uow.caches.save(claimed, version)
    with store.transaction() as uow:
        assert uow.caches.claim((CacheStatus.AVAILABLE,), "b", T0, T0) is None
        assert uow.caches.lease_holders() == ["a"]


def test_concurrent_claimers_never_share_a_cache(metadata_url: str) -> None:
    stores = [SqlMetadataStore(metadata_url), SqlMetadataStore(metadata_url)]
    try:
        caches = [new_cache(f"c{i}", now=T0 + timedelta(seconds=i)) for i in range(24)]
        add(stores[0], *caches)
        until = T0 + timedelta(hours=1)

        def claim_all(worker: int) -> list[str]:
            claimed: list[str] = []
            store = stores[worker % 2]
            while True:
                with store.transaction() as uow:
                    cache = uow.caches.claim(BUILDING, f"w{worker}", T0, until)
                if cache is None:
                    return claimed
                claimed.append(cache.id)

        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(claim_all, range(4)))
        everything = [cache_id for result in results for cache_id in result]
        assert sorted(everything) == sorted(cache.id for cache in caches)
    finally:
        for store in stores:
            store.close()


def test_a_claim_waits_for_or_skips_an_uncommitted_claim(metadata_url: str) -> None:
    first, second = SqlMetadataStore(metadata_url), SqlMetadataStore(metadata_url)
    try:
        cache = new_cache()
        add(first, cache)
        until = T0 + timedelta(hours=1)
        outcome: list[ImageCache | None] = []

        def rival() -> None:
            with second.transaction() as uow:
                outcome.append(uow.caches.claim(BUILDING, "b", T0, until))

        with first.transaction() as uow:
            assert uow.caches.claim(BUILDING, "a", T0, until) == cache
            thread = threading.Thread(target=rival)
            thread.start()
            time.sleep(0.3)
        thread.join(timeout=30)
        assert outcome == [None]
    finally:
        first.close()
        second.close()


def test_expired_lists_finished_caches_past_retention(store: SqlMetadataStore) -> None:
    def cache(name: str, status: CacheStatus, retention_days: int = 1) -> ImageCache:
        made = new_cache(name, retention_days=retention_days)
        made.status = status
        return made

    available = cache("available", CacheStatus.AVAILABLE)
    failed = cache("failed", CacheStatus.FAILED)
    unavailable = cache("unavailable", CacheStatus.UNAVAILABLE)
    creating = cache("creating", CacheStatus.CREATING)
    deleting = cache("deleting", CacheStatus.DELETING)
    forever = cache("forever", CacheStatus.AVAILABLE, retention_days=0)
    young = new_cache("young", now=T0 + timedelta(hours=1), retention_days=1)
    young.status = CacheStatus.AVAILABLE
    add(store, available, failed, unavailable, creating, deleting, forever, young)

    with store.transaction() as uow:
        assert uow.caches.expired(T0 + timedelta(hours=23)) == []
        at_expiry = uow.caches.expired(T0 + timedelta(days=1))
        much_later = uow.caches.expired(T0 + timedelta(days=400))
    assert {c.id for c in at_expiry} == {available.id, failed.id, unavailable.id}
    assert {c.id for c in much_later} == {available.id, failed.id, unavailable.id, young.id}


# --- blob references ----------------------------------------------------------------------


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def test_blob_refs(store: SqlMetadataStore) -> None:
    shared = BlobInfo(digest(1), 100, "application/vnd.oci.image.layer.v1.tar+gzip")
    own = BlobInfo(digest(2), 2**35, "application/vnd.oci.image.manifest.v1+json")
    other = BlobInfo(digest(3), 3, "application/vnd.oci.image.config.v1+json")
    with store.transaction() as uow:
        uow.blob_refs.add_refs("a", [shared, own, shared])
        uow.blob_refs.add_refs("a", [own])
        uow.blob_refs.add_refs("b", [shared, other])
        uow.blob_refs.add_refs("c", [])
    with store.transaction() as uow:
        uow.blob_refs.add_refs("a", [shared, own])
        assert uow.blob_refs.refs_of("a") == [shared, own]
        assert uow.blob_refs.refs_of("nobody") == []
        assert uow.blob_refs.all_referenced() == {shared.digest, own.digest, other.digest}
        assert uow.blob_refs.referenced([digest(1), digest(9), digest(3)]) == {
            digest(1),
            digest(3),
        }
        assert uow.blob_refs.referenced([]) == set()

    with store.transaction() as uow:
        uow.blob_refs.drop_refs("b")
        uow.blob_refs.drop_refs("b")
    with store.transaction() as uow:
        assert uow.blob_refs.refs_of("b") == []
        assert uow.blob_refs.all_referenced() == {shared.digest, own.digest}
        assert uow.blob_refs.referenced([digest(3), digest(1)]) == {digest(1)}


def test_references_of_builds_in_progress_are_told_apart(store: SqlMetadataStore) -> None:
    building, built = new_cache("building"), new_cache("built")
    built.mark_available([], T0)
    add(store, building, built)
    with store.transaction() as uow:
        uow.blob_refs.add_refs(
            building.id, [BlobInfo(digest(1), 1, "m"), BlobInfo(digest(2), 2, "m")]
        )
        uow.blob_refs.add_refs(built.id, [BlobInfo(digest(2), 2, "m"), BlobInfo(digest(3), 3, "m")])
        uow.blob_refs.add_refs("vmimage:x", [BlobInfo(digest(4), 4, "m")])
    with store.transaction(read_only=True) as uow:
        assert uow.blob_refs.referenced_by_settled_owners() == {digest(2), digest(3), digest(4)}


def test_a_project_holds_only_what_its_built_caches_hold(store: SqlMetadataStore) -> None:
    """The blobs a build may take from the store without asking its upstream: those a built
    cache of the same project holds; never another project's, never an unfinished build's."""
    built = available_cache("built", "p1", T0)
    stale = available_cache("stale", "p1", T0)
    stale.status = CacheStatus.UNAVAILABLE
    building, failed = new_cache("building", "p1", T0), new_cache("failed", "p1", T0)
    failed.status = CacheStatus.FAILED
    theirs = available_cache("theirs", "p2", T0)
    add(store, built, stale, building, failed, theirs)
    with store.transaction() as uow:
        uow.blob_refs.add_refs(built.id, [BlobInfo(digest(1), 1, "m")])
        uow.blob_refs.add_refs(stale.id, [BlobInfo(digest(2), 2, "m")])
        uow.blob_refs.add_refs(building.id, [BlobInfo(digest(3), 3, "m")])
        uow.blob_refs.add_refs(failed.id, [BlobInfo(digest(4), 4, "m")])
        uow.blob_refs.add_refs(theirs.id, [BlobInfo(digest(5), 5, "m")])
        uow.blob_refs.add_refs("vmimage:x", [BlobInfo(digest(6), 6, "m")])
    wanted = [digest(n) for n in range(1, 8)]
    with store.transaction(read_only=True) as uow:
        assert uow.blob_refs.held_by_project("p1", wanted, "new") == {digest(1), digest(2)}
        # a cache's own references (recorded before its bytes were checked) do not count
        assert uow.blob_refs.held_by_project("p1", wanted, built.id) == {digest(2)}
        assert uow.blob_refs.held_by_project("p2", wanted, "new") == {digest(5)}
        assert uow.blob_refs.held_by_project("p3", wanted, "new") == set()
        assert uow.blob_refs.held_by_project("p1", [], "new") == set()


def test_referenced_handles_long_lists(store: SqlMetadataStore) -> None:
    blobs = [BlobInfo(digest(n), n, "m") for n in range(0, 3000, 2)]
    with store.transaction() as uow:
        uow.blob_refs.add_refs("owner", blobs)
    with store.transaction() as uow:
        found = uow.blob_refs.referenced([digest(n) for n in range(3000)])
    assert found == {blob.digest for blob in blobs}


# --- serving on the registry port ---------------------------------------------------------


def available_cache(name: str, project_id: str, now: datetime) -> ImageCache:
    cache = new_cache(name, project_id, now)
    cache.status = CacheStatus.AVAILABLE
    return cache


def test_available_lists_the_projects_available_caches_newest_first(
    store: SqlMetadataStore,
) -> None:
    older = available_cache("older", "p1", T0)
    newer = available_cache("newer", "p1", T0 + timedelta(hours=1))
    building = new_cache("building", "p1", T0 + timedelta(hours=2))
    failed = new_cache("failed", "p1", T0 + timedelta(hours=3))
    failed.status = CacheStatus.FAILED
    neighbour = available_cache("neighbour", "p2", T0 + timedelta(minutes=30))
    stranger = available_cache("stranger", "p3", T0 + timedelta(hours=5))
    add(store, older, newer, building, failed, neighbour, stranger)

    with store.transaction(read_only=True) as uow:
        assert uow.caches.available(["p1"]) == [newer, older]
        assert [c.id for c in uow.caches.available(("p2", "p1"))] == [
            newer.id,
            neighbour.id,
            older.id,
        ]
        assert uow.caches.available([]) == []
        assert uow.caches.available(["nobody"]) == []
        # With building_of, that project's caches in the making come in the same read.
        assert uow.caches.available(["p1"], building_of="p1") == [building, newer, older]
        assert uow.caches.available([], building_of="p1") == [building]
        assert uow.caches.available(["p1"], building_of="p2") == [newer, older]


def test_which_caches_hold_a_digest(store: SqlMetadataStore) -> None:
    manifest = BlobInfo(digest(1), 500, "application/vnd.oci.image.manifest.v1+json")
    layer = BlobInfo(digest(2), 2**33, "application/vnd.oci.image.layer.v1.tar+gzip")
    mine = available_cache("mine", "p1", T0)
    building = new_cache("building", "p1", T0)
    theirs = available_cache("theirs", "p2", T0)
    add(store, mine, building, theirs)
    with store.transaction() as uow:
        uow.blob_refs.add_refs(mine.id, [manifest, layer])
        uow.blob_refs.add_refs(building.id, [manifest, BlobInfo(digest(3), 3, "m")])
        uow.blob_refs.add_refs(theirs.id, [BlobInfo(digest(4), 4, "m")])

    with store.transaction(read_only=True) as uow:
        assert uow.blob_refs.owners_of(digest(1), [mine.id, building.id, theirs.id]) == {
            mine.id: manifest,
            building.id: manifest,
        }
        assert uow.blob_refs.owners_of(digest(1), [theirs.id]) == {}
        assert uow.blob_refs.owners_of(digest(1), []) == {}
        assert uow.blob_refs.available_ref(digest(2), ["p1"]) == layer
        assert uow.blob_refs.available_ref(digest(1), ["p2", "p1"]) == manifest
        # held only by a cache that is still building, or by another project's cache
        assert uow.blob_refs.available_ref(digest(3), ["p1"]) is None
        assert uow.blob_refs.available_ref(digest(4), ["p1"]) is None
        assert uow.blob_refs.available_ref(digest(4), ["p2"]) == BlobInfo(digest(4), 4, "m")
        assert uow.blob_refs.available_ref(digest(2), []) is None


def test_record_use_only_moves_forward_and_keeps_the_version(store: SqlMetadataStore) -> None:
    cache = available_cache("used", "p1", T0)
    add(store, cache)
    later = T0 + timedelta(days=1)
    with store.transaction() as uow:
        assert uow.caches.record_use(cache.id, later) is True
        assert uow.caches.record_use(cache.id, T0 + timedelta(hours=1)) is False
        assert uow.caches.record_use("missing", later) is False
    stored = get(store, cache.id)
    assert stored is not None
    assert stored.last_used_at == later
    assert stored.resource_version == cache.resource_version
    with store.transaction() as uow:
        assert uow.caches.record_use(cache.id, later + timedelta(seconds=61)) is True
    assert (stored := get(store, cache.id)) is not None
    assert stored.last_used_at == later + timedelta(seconds=61)


def test_anonymous_pull_is_off_until_a_project_allows_it(store: SqlMetadataStore) -> None:
    with store.transaction() as uow:
        uow.identity.add_project(Project(id="p-a", name="mirror", created_at=T0))
        uow.identity.add_project(Project(id="p-b", name="private", created_at=T0))
    with store.transaction() as uow:
        assert uow.identity.anonymous_pull_projects() == []
        assert uow.identity.set_anonymous_pull("p-a", True) is True
        assert uow.identity.set_anonymous_pull("p-missing", True) is False
    with store.transaction(read_only=True) as uow:
        assert uow.identity.anonymous_pull_projects() == ["p-a"]
        assert uow.identity.project_by_name("mirror") == Project("p-a", "mirror", T0)
    with store.transaction() as uow:
        uow.identity.set_anonymous_pull("p-b", True)
        uow.identity.set_anonymous_pull("p-a", False)
    with store.transaction(read_only=True) as uow:
        assert uow.identity.anonymous_pull_projects() == ["p-b"]


# --- identity -----------------------------------------------------------------------------


def test_identity(store: SqlMetadataStore) -> None:
    project = Project(id="p-1", name="team-a", created_at=T0)
    token = new_token()
    credential = Credential(
        id="c-1",
        project_id="p-1",
        role=Role.MEMBER,
        token_sha256=hash_token(token),
        created_at=T0,
        expires_at=T0 + timedelta(days=30),
    )
    forever = Credential("c-2", "p-1", Role.ADMIN, hash_token(new_token()), T0)
    with store.transaction() as uow:
        uow.identity.add_project(project)
        uow.identity.add_credential(credential)
        uow.identity.add_credential(forever)

    with store.transaction() as uow:
        assert uow.identity.project_by_name("team-a") == project
        assert uow.identity.project_by_id("p-1") == project
        assert uow.identity.project_by_name("team-b") is None
        assert uow.identity.project_by_id("p-2") is None
        assert uow.identity.credential_by_token_hash(hash_token(token)) == credential
        assert uow.identity.credential_by_token_hash(forever.token_sha256) == forever
        assert uow.identity.credential_by_token_hash(hash_token("nope")) is None

    with store.transaction() as uow:
        with pytest.raises(Conflict):
            uow.identity.add_project(Project(id="p-2", name="team-a", created_at=T0))
        with pytest.raises(Conflict):
            uow.identity.add_credential(
                Credential("c-3", "p-1", Role.READER, credential.token_sha256, T0)
            )
        with pytest.raises(Conflict):  # no such project: the foreign key holds on SQLite too
            uow.identity.add_credential(Credential("c-4", "p-404", Role.READER, "f" * 64, T0))
        uow.identity.add_project(Project(id="p-3", name="team-c", created_at=T0))
    with store.transaction() as uow:
        assert uow.identity.project_by_name("team-c") is not None


# --- secrets ------------------------------------------------------------------------------


def test_secrets(store: SqlMetadataStore) -> None:
    every_byte = bytes(range(256))
    first = StoredSecret("p1", "default", "regcred", "kubernetes.io/dockerconfigjson", b"1", T0)
    second = StoredSecret("p1", "default", "another", "Opaque", every_byte, T0)
    elsewhere = StoredSecret("p1", "prod", "regcred", "Opaque", b"3", T0)
    foreign = StoredSecret("p2", "default", "regcred", "Opaque", b"4", T0)
    with store.transaction() as uow:
        for secret in (first, second, elsewhere, foreign):
            uow.secrets.put(secret)

    replaced = StoredSecret("p1", "default", "regcred", "Opaque", b"new", T0 + timedelta(days=1))
    with store.transaction() as uow:
        assert uow.secrets.get("p1", "default", "regcred") == first
        assert uow.secrets.get("p1", "default", "another") == second
        uow.secrets.put(replaced)
    with store.transaction() as uow:
        assert uow.secrets.get("p1", "default", "regcred") == replaced
        assert uow.secrets.get("p2", "default", "regcred") == foreign
        assert uow.secrets.get("p3", "default", "regcred") is None
        assert uow.secrets.list("p1") == [second, replaced, elsewhere]
        assert uow.secrets.list("p1", "prod") == [elsewhere]
        assert uow.secrets.list("p1", "nope") == []
        assert uow.secrets.list("p2") == [foreign]

    with store.transaction() as uow:
        assert uow.secrets.delete("p2", "default", "another") is False
        assert uow.secrets.delete("p1", "default", "regcred") is True
        assert uow.secrets.delete("p1", "default", "regcred") is False
    with store.transaction() as uow:
        assert uow.secrets.list("p1") == [second, elsewhere]
        assert uow.secrets.get("p2", "default", "regcred") == foreign


# --- concurrency --------------------------------------------------------------------------


def test_parallel_writers_do_not_fail(metadata_url: str) -> None:
    """Read-modify-write transactions from two stores (as from two processes) and threads."""
    stores = [SqlMetadataStore(metadata_url), SqlMetadataStore(metadata_url)]
    try:

        def write(worker: int) -> int:
            store = stores[worker % 2]
            cache = new_cache(f"w{worker}")
            add(store, cache)
            saved = 0
            for step in range(50):
                with store.transaction() as uow:
                    current = uow.caches.get(cache.id)
                    assert current is not None
                    version = current.resource_version
                    current.labels["step"] = str(step)
                    current.touch(T0 + timedelta(seconds=step))
                    uow.blob_refs.add_refs(cache.id, [BlobInfo(digest(step), step, "m")])
                    saved += uow.caches.save(current, version)
            return saved

        with ThreadPoolExecutor(max_workers=4) as pool:
            assert list(pool.map(write, range(4))) == [50, 50, 50, 50]
        with stores[1].transaction() as uow:
            assert len(uow.caches.list("p1")) == 4
            assert len(uow.blob_refs.all_referenced()) == 50
    finally:
        for store in stores:
            store.close()


def test_read_only_transactions_run_beside_a_writer(metadata_url: str) -> None:
    writer, reader = SqlMetadataStore(metadata_url), SqlMetadataStore(metadata_url)
    try:
        cache = new_cache()
        add(writer, cache)
        with writer.transaction() as uow:
            uow.caches.add(new_cache("pending"))
            started = time.monotonic()
            with reader.transaction(read_only=True) as read:
                assert read.caches.list("p1") == [cache]
            assert time.monotonic() - started < 5
    finally:
        writer.close()
        reader.close()


def test_the_known_schema_head_is_the_newest_migration() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from imagedepot.adapters.db.store import MIGRATIONS_DIR, SCHEMA_HEAD

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_heads() == [SCHEMA_HEAD]


# --- the operator's overview (console admin pages) ------------------------------------------


def test_project_summaries_count_credentials_caches_and_anonymous_pull(
    store: SqlMetadataStore,
) -> None:
    now = T0 + timedelta(days=10)
    with store.transaction() as uow:
        uow.identity.add_project(Project("p-b", "beta", T0))
        uow.identity.add_project(Project("p-a", "alpha", T0 + timedelta(hours=1)))
        uow.identity.add_project(Project("p-e", "empty", T0))
        for number, expires_at in enumerate(
            (None, T0 + timedelta(days=30), T0 + timedelta(days=1))
        ):
            uow.identity.add_credential(
                Credential(f"a-{number}", "p-a", Role.READER, f"{number:064x}", T0, expires_at)
            )
        uow.identity.add_credential(Credential("b-0", "p-b", Role.ADMIN, "b" * 64, T0))
        uow.identity.add_credential(Credential("b-1", "p-b", Role.ADMIN, "c" * 64, T0))
        uow.identity.revoke_credential("b-1", T0)
        uow.identity.set_anonymous_pull("p-b", True)
    add(store, new_cache("one", "p-a"), new_cache("two", "p-a"), new_cache("three", "p-b"))

    with store.transaction(read_only=True) as uow:
        summaries = uow.identity.project_summaries(now)
    assert [(s.project.name, s.anonymous_pull) for s in summaries] == [
        ("alpha", False),
        ("beta", True),
        ("empty", False),
    ]
    assert summaries[0].project == Project("p-a", "alpha", T0 + timedelta(hours=1))
    # expired (a-2) and revoked (b-1) credentials are issued but not usable
    assert [(s.credentials, s.usable_credentials, s.caches) for s in summaries] == [
        (3, 2, 2),
        (2, 1, 1),
        (0, 0, 0),
    ]


def test_cache_usage_counts_shared_blobs_per_cache_and_stored_once(
    store: SqlMetadataStore,
) -> None:
    base, web, api, alone = (BlobInfo(digest(n), 10**n, "m") for n in range(1, 5))
    first, second = available_cache("first", "p1", T0), available_cache("second", "p1", T0)
    theirs, building = available_cache("theirs", "p2", T0), new_cache("building", "p3", T0)
    add(store, first, second, theirs, building)
    with store.transaction() as uow:
        uow.blob_refs.add_refs(first.id, [base, web])
        uow.blob_refs.add_refs(second.id, [base, api])
        uow.blob_refs.add_refs(theirs.id, [base, alone])
        uow.blob_refs.add_refs(building.id, [alone])  # fetched, perhaps, but not yet built
        uow.blob_refs.add_refs("vmimage:x", [alone])  # not a cache

    with store.transaction(read_only=True) as uow:
        by_project = uow.blob_refs.cache_usage_by_project()
        total = uow.blob_refs.cache_usage_total()
    assert by_project == {
        "p1": BlobUsage(
            caches=2, referenced_bytes=10 + 100 + 10 + 1000, stored_bytes=1110, blobs=3
        ),
        "p2": BlobUsage(caches=1, referenced_bytes=10 + 10**4, stored_bytes=10 + 10**4, blobs=2),
    }
    assert total == BlobUsage(caches=3, referenced_bytes=1120 + 10010, stored_bytes=11110, blobs=4)


def test_cache_usage_of_an_empty_store(store: SqlMetadataStore) -> None:
    with store.transaction(read_only=True) as uow:
        assert uow.blob_refs.cache_usage_by_project() == {}
        assert uow.blob_refs.cache_usage_total() == BlobUsage(0, 0, 0, 0)


def audit_event(at_minute: int, project_id: str | None, action: str, status: int) -> AuditEvent:
    return AuditEvent(
        at=T0 + timedelta(minutes=at_minute),
        credential_id="c-1",
        project_id=project_id,
        action=action,
        target=f"/target/{at_minute}",
        status=status,
        request_id=f"r-{at_minute}",
        remote="127.0.0.1",
    )


def test_audit_search_filters_by_project_action_and_result_newest_first(
    store: SqlMetadataStore,
) -> None:
    events = [
        audit_event(1, "p-a", "iam:credential:create", 200),
        audit_event(2, "p-a", "cce:imageCache:create", 201),
        audit_event(3, "p-b", "iam:credential:create", 403),
        audit_event(4, "p-a", "iam:credential:revoke", 404),
        audit_event(5, None, "cce:imageCache:delete", 401),
        audit_event(6, "p-a", "cimg:50%_off", 200),  # LIKE's wildcards are plain characters
    ]
    with store.transaction() as uow:
        for event in events:
            uow.audit.add(event)

    def found(query: AuditQuery) -> list[int]:
        with store.transaction(read_only=True) as uow:
            listed = uow.audit.search(query)
        return [events.index(event) + 1 for event in listed]

    assert found(AuditQuery()) == [6, 5, 4, 3, 2, 1]
    assert found(AuditQuery(project_id="p-a")) == [6, 4, 2, 1]
    assert found(AuditQuery(action="CREDENTIAL")) == [4, 3, 1]
    assert found(AuditQuery(action="iam:credential:c")) == [3, 1]
    assert found(AuditQuery(action="50%")) == [6]
    assert found(AuditQuery(action="_")) == [6]
    assert found(AuditQuery(action="%")) == [6]
    assert found(AuditQuery(refused=True)) == [5, 4, 3]
    assert found(AuditQuery(refused=False)) == [6, 2, 1]
    assert found(AuditQuery(project_id="p-a", action="credential", refused=False)) == [1]
    assert found(AuditQuery(limit=2)) == [6, 5]
    assert found(AuditQuery(project_id="p-none")) == []
