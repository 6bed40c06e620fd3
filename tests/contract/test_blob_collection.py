"""Garbage collection coordinated through the metadata store, on SQLite and PostgreSQL: a
sweep waits out the grace period from when it first saw a blob unreferenced, released blobs
go at once, and (on PostgreSQL, where builders and collectors may be on different machines)
a blob a builder is reusing is never removed under it."""

from __future__ import annotations

import hashlib
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from imagedepot.adapters.blobs.filesystem import FilesystemBlobStore
from imagedepot.adapters.db.store import SqlMetadataStore
from imagedepot.ports import BlobInfo
from imagedepot.services.blobs import BlobService
from tests.support.clock import MovableClock

HOUR = timedelta(hours=1)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Depot:
    def __init__(self, store: SqlMetadataStore, root: Path) -> None:
        self.store = store
        self.blobs = FilesystemBlobStore(root / "blobs")
        self.clock = MovableClock()
        self.gc = BlobService(store, self.blobs, self.clock, grace=HOUR)

    def stored(self, data: bytes) -> str:
        self.blobs.put_bytes(digest_of(data), data)
        return digest_of(data)

    def reference(self, owner: str, digest: str) -> None:
        with self.store.transaction() as uow:
            uow.blob_refs.add_refs(owner, [BlobInfo(digest, 1, "m")])

    def release(self, owner: str) -> None:
        with self.store.transaction() as uow:
            uow.blob_refs.drop_refs(owner)


@pytest.fixture
def depot(store: SqlMetadataStore, tmp_path: Path) -> Depot:
    return Depot(store, tmp_path)


def test_a_sweep_waits_out_the_grace_period(depot: Depot) -> None:
    orphan, kept = depot.stored(b"orphan"), depot.stored(b"kept")
    depot.reference("cache-1", kept)
    assert depot.gc.collect() == [], "first seen unreferenced now: its clock starts"
    depot.clock.current += HOUR - timedelta(seconds=1)
    assert depot.gc.collect() == []
    depot.clock.current += timedelta(seconds=1)
    assert depot.gc.collect() == [orphan]
    assert not depot.blobs.has(orphan)
    depot.clock.current += 10 * HOUR
    assert depot.gc.collect() == []
    assert depot.blobs.has(kept)


def test_a_blob_referenced_again_starts_its_clock_afresh(depot: Depot) -> None:
    blob = depot.stored(b"comes and goes")
    depot.gc.collect()
    depot.clock.current += timedelta(minutes=30)
    depot.reference("cache-1", blob)
    depot.gc.collect()  # referenced: its clock stops
    depot.release("cache-1")
    depot.clock.current += timedelta(minutes=45)
    assert depot.gc.collect() == [], "seen unreferenced again only now"
    depot.clock.current += HOUR
    assert depot.gc.collect() == [blob]


def test_grace_zero_collects_now_and_released_blobs_go_at_once(depot: Depot) -> None:
    orphan, released, shared = (depot.stored(x) for x in (b"orphan", b"released", b"shared"))
    depot.reference("cache-1", released)
    depot.reference("cache-1", shared)
    depot.reference("cache-2", shared)
    depot.release("cache-1")
    assert depot.gc.collect([released, shared]) == [released], "another cache still uses one"
    assert depot.gc.collect(grace=timedelta(0)) == [orphan]
    assert sorted(depot.blobs.digests()) == [shared]


@pytest.mark.parametrize("metadata_url", ["postgresql"], indirect=True)
def test_a_blob_a_builder_is_reusing_is_never_removed_under_it(depot: Depot) -> None:
    blob = depot.stored(b"reused")
    decided, recorded = threading.Event(), threading.Event()

    def builder() -> None:
        with depot.store.transaction() as uow:
            uow.blob_locks.hold_for_reuse([blob])
            decided.set()
            recorded.wait(10)
            uow.blob_refs.add_refs("cache-new", [BlobInfo(blob, 6, "m")])

    thread = threading.Thread(target=builder)
    thread.start()
    try:
        assert decided.wait(10)
        assert depot.gc.collect([blob]) == [], "held by the builder: left alone"
        assert depot.blobs.has(blob)
    finally:
        recorded.set()
        thread.join(10)
    assert depot.gc.collect([blob]) == [], "now referenced"
    assert depot.blobs.has(blob)


@pytest.mark.parametrize("metadata_url", ["postgresql"], indirect=True)
def test_a_builder_waits_for_a_removal_in_progress(depot: Depot) -> None:
    blob = depot.stored(b"being removed")
    removing, done = threading.Event(), threading.Event()
    order: list[str] = []

    def collector() -> None:
        with depot.store.transaction() as uow:
            assert uow.blob_locks.hold_for_removal(blob)
            removing.set()
            done.wait(0.5)  # the builder must not get past its hold meanwhile
            depot.blobs.delete(blob)
            order.append("removed")

    thread = threading.Thread(target=collector)
    thread.start()
    assert removing.wait(10)
    with depot.store.transaction() as uow:
        uow.blob_locks.hold_for_reuse([blob])
        order.append("builder checks")
        present = depot.blobs.has(blob)
    thread.join(10)
    assert order == ["removed", "builder checks"]
    assert not present, "the builder sees the removal and fetches the blob again"


def test_one_fetch_claim_per_blob_until_released_expired_or_dead(store: SqlMetadataStore) -> None:
    clock = MovableClock()
    now, lease = clock.now(), timedelta(seconds=30)
    digest = digest_of(b"wanted by many")
    with store.transaction() as uow:
        claims = uow.blob_fetches
        assert claims.claim(digest, "host-a/1/x", now, now + lease) == "host-a/1/x"
        assert claims.claim(digest, "host-b/2/y", now, now + lease) == "host-a/1/x"
        assert claims.claim(digest, "host-a/1/x", now, now + lease) == "host-a/1/x"
        assert claims.holders() == ["host-a/1/x"]
        assert claims.renew(digest, "host-a/1/x", now + 2 * lease)
        assert not claims.renew(digest, "host-b/2/y", now + 2 * lease)
    later = now + lease + timedelta(seconds=1)
    with store.transaction() as uow:
        assert uow.blob_fetches.claim(digest, "host-b/2/y", later, later + lease) == "host-a/1/x"
    expired = now + 2 * lease + timedelta(seconds=1)
    with store.transaction() as uow:
        assert (
            uow.blob_fetches.claim(digest, "host-b/2/y", expired, expired + lease) == "host-b/2/y"
        )
        assert not uow.blob_fetches.renew(digest, "host-a/1/x", expired + lease)
        assert (
            uow.blob_fetches.claim(digest, "host-a/3/z", expired, expired + lease, ["host-b/2/y"])
            == "host-a/3/z"
        ), "a dead holder's claim is free at once"
        uow.blob_fetches.release(digest, "host-b/2/y")  # not the holder any more: nothing
        assert uow.blob_fetches.holders() == ["host-a/3/z"]
        uow.blob_fetches.release(digest, "host-a/3/z")
        assert uow.blob_fetches.holders() == []


def test_heartbeats_tell_the_silent(store: SqlMetadataStore) -> None:
    clock = MovableClock()
    start = clock.now()
    with store.transaction() as uow:
        uow.heartbeats.beat("host-a/1/x", start)
        uow.heartbeats.beat("host-b/2/y", start)
        uow.heartbeats.beat("host-b/2/y", start + timedelta(seconds=20))
    since = start + timedelta(seconds=10)
    with store.transaction() as uow:
        assert uow.heartbeats.silent(["host-a/1/x", "host-b/2/y", "never/3/z"], since) == [
            "host-a/1/x",
            "never/3/z",
        ]
        assert uow.heartbeats.forget_silent(since) == 1
        assert uow.heartbeats.silent(["host-b/2/y"], since) == []


def test_a_sealed_check_value_is_kept_once(store: SqlMetadataStore) -> None:
    with store.transaction() as uow:
        assert uow.key_checks.sealed("k") is None
        assert uow.key_checks.add_if_absent("k", b"first") == b"first"
        assert uow.key_checks.add_if_absent("k", b"second") == b"first"
        uow.key_checks.put("k", b"resealed")
        assert uow.key_checks.sealed("k") == b"resealed"
