"""The blob store contract, run on every backend: the filesystem, and S3 on two real engines
(SeaweedFS and Ceph radosgw). Whatever the backend, bytes become visible under their digest
only once verified, reads honour offsets, uploads of unknown digest are staged until placed,
and what a dead writer left is cleaned up."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from imagedepot.adapters.blobs.filesystem import FilesystemBlobStore
from imagedepot.adapters.blobs.s3 import S3BlobStore, S3Location, S3Tuning
from imagedepot.ports import BlobCorrupt, BlobStore, BlobStoreUnavailable
from tests.support.s3engines import S3Engine

MiB = 1 << 20
PART = 5 * MiB  # the smallest part S3 takes: a few MiB make a multipart upload


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Backend:
    store: BlobStore
    engine: S3Engine | None = None
    bucket: str = ""

    def leftovers(self) -> list[str]:
        """Whatever writers left staged: temp files, multipart uploads, staging objects."""
        store = self.store
        if isinstance(store, FilesystemBlobStore):
            return [path.name for path in store.temp_dir.iterdir()]
        assert self.engine is not None
        client = self.engine.client()
        uploads = client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        staged = client.list_objects_v2(Bucket=self.bucket, Prefix="depot/staging/")
        return [u["Key"] for u in uploads] + [o["Key"] for o in staged.get("Contents", [])]

    def tamper(self, digest: str, data: bytes) -> None:
        """Change a stored blob's bytes behind the store's back."""
        store = self.store
        if isinstance(store, FilesystemBlobStore):
            store.path(digest).write_bytes(data)
            return
        assert isinstance(store, S3BlobStore)
        assert self.engine is not None
        self.engine.client().put_object(Bucket=self.bucket, Key=store.key(digest), Body=data)


def s3_store(engine: S3Engine, bucket: str, **tuning: object) -> S3BlobStore:
    settings = {"part_size": PART, "parallel_parts": 2, **tuning}
    return S3BlobStore(
        S3Location.parse(f"s3://{bucket}/depot"),
        S3Tuning(**settings),  # type: ignore[arg-type]
        client=engine.client(),
    )


@pytest.fixture(params=["filesystem", "seaweedfs", "radosgw"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "filesystem":
        yield Backend(FilesystemBlobStore(tmp_path / "blobs"))
        return
    engine: S3Engine = request.getfixturevalue(request.param)
    bucket = engine.new_bucket()
    store = s3_store(engine, bucket, redirect_seconds=60)
    try:
        yield Backend(store, engine, bucket)
    finally:
        store.close()


def write_all(store: BlobStore, data: bytes, piece: int = MiB) -> str:
    digest = digest_of(data)
    writer = store.writer(digest, len(data))
    try:
        for start in range(0, len(data), piece):
            writer.write(data[start : start + piece])
        writer.commit()
    finally:
        writer.abort()
    return digest


def read_all(store: BlobStore, digest: str, start: int = 0, length: int | None = None) -> bytes:
    with store.open(digest, start, length) as chunks:
        return b"".join(chunks)


def test_a_verified_blob_becomes_visible_only_at_commit(backend: Backend) -> None:
    store = backend.store
    data = os.urandom(2 * PART + 17)  # three parts on S3
    digest = digest_of(data)
    writer = store.writer(digest, len(data))
    for start in range(0, len(data), MiB):
        writer.write(data[start : start + MiB])
    assert writer.written == len(data)
    assert not store.has(digest), "nothing is visible before commit"
    assert list(store.digests()) == []
    writer.commit()
    writer.abort()  # safe after commit, and changes nothing
    assert store.has(digest)
    assert store.size(digest) == len(data)
    assert read_all(store, digest) == data
    assert list(store.digests()) == [digest]
    assert backend.leftovers() == []


def test_reads_honour_offset_and_length_across_parts(backend: Backend) -> None:
    data = os.urandom(PART + 1000)
    digest = write_all(backend.store, data)
    assert read_all(backend.store, digest, PART - 10, 20) == data[PART - 10 : PART + 10]
    assert read_all(backend.store, digest, PART + 900) == data[PART + 900 :]
    assert read_all(backend.store, digest, 0, 1) == data[:1]
    assert read_all(backend.store, digest, 5, 0) == b""


@pytest.mark.parametrize("size", [0, 1, PART, PART + 1])
def test_sizes_at_the_part_edges_round_trip(backend: Backend, size: int) -> None:
    data = os.urandom(size)
    digest = write_all(backend.store, data, piece=PART // 2 + 3)
    assert backend.store.size(digest) == size
    assert read_all(backend.store, digest) == data


def test_wrong_bytes_never_become_visible(backend: Backend) -> None:
    store = backend.store
    good = os.urandom(PART + 5)
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    writer = store.writer(digest_of(good), len(good))
    writer.write(bytes(bad))
    with pytest.raises(BlobCorrupt, match="has digest"):
        writer.commit()
    writer.abort()
    assert not store.has(digest_of(good))
    assert list(store.digests()) == []
    assert backend.leftovers() == [], "the refused bytes are thrown away"


def test_a_short_blob_is_refused_and_too_many_bytes_at_once(backend: Backend) -> None:
    store = backend.store
    writer = store.writer(digest_of(b"abcdef"), 6)
    writer.write(b"abc")
    with pytest.raises(BlobCorrupt, match="expected 6"):
        writer.commit()
    writer.abort()
    writer = store.writer(digest_of(b"abc"), 3)
    with pytest.raises(BlobCorrupt, match="longer"):
        writer.write(b"abcd")
    writer.abort()
    assert not store.has(digest_of(b"abc"))
    assert backend.leftovers() == []


def test_reset_starts_over(backend: Backend) -> None:
    store = backend.store
    data = os.urandom(PART + 3)
    writer = store.writer(digest_of(data), len(data))
    writer.write(os.urandom(PART + 1))  # a part of garbage already sent
    writer.reset()
    assert writer.written == 0
    writer.write(data)
    writer.commit()
    assert read_all(store, digest_of(data)) == data
    assert backend.leftovers() == []


def test_an_upload_is_staged_until_placed_under_its_digest(backend: Backend) -> None:
    store = backend.store
    data = os.urandom(PART + 321)
    upload = store.upload_writer()
    upload.write(data[:PART])
    upload.write(data[PART:])
    digest = upload.finish()
    assert digest == digest_of(data)
    assert not store.has(digest), "finished is durable, not visible"
    assert len(backend.leftovers()) == 1
    assert upload.commit() == digest
    assert upload.commit() == digest  # idempotent
    upload.abort()  # safe after commit
    assert read_all(store, digest) == data
    assert backend.leftovers() == []
    again = store.upload_writer()
    again.write(data)
    assert again.commit() == digest  # the same bytes: the stored copy stays
    assert list(store.digests()) == [digest]
    assert backend.leftovers() == []


def test_an_aborted_upload_leaves_nothing(backend: Backend) -> None:
    store = backend.store
    upload = store.upload_writer()
    upload.write(os.urandom(PART + 1))
    upload.abort()
    finished = store.upload_writer()
    finished.write(b"finished, then dropped")
    finished.finish()
    finished.abort()
    assert list(store.digests()) == []
    assert backend.leftovers() == []


def test_small_blobs_in_memory(backend: Backend) -> None:
    store = backend.store
    manifest = b'{"schemaVersion":2}'
    store.put_bytes(digest_of(manifest), manifest)
    assert store.read_bytes(digest_of(manifest), 1024) == manifest
    with pytest.raises(BlobCorrupt):
        store.read_bytes(digest_of(manifest), 4)
    with pytest.raises(BlobCorrupt):
        store.put_bytes(digest_of(b"other"), manifest)
    assert list(store.digests()) == [digest_of(manifest)]


def test_delete_and_missing_blobs(backend: Backend) -> None:
    store = backend.store
    digest = write_all(store, b"short-lived")
    store.delete(digest)
    store.delete(digest)  # nothing when it is not stored
    assert not store.has(digest)
    assert store.size(digest) is None
    assert list(store.digests()) == []
    with pytest.raises(FileNotFoundError), store.open(digest) as chunks:
        b"".join(chunks)


def test_bytes_changed_behind_the_stores_back_are_read_as_they_are(backend: Backend) -> None:
    """The store does not hide damage: fsck re-hashes what `open` gives."""
    digest = write_all(backend.store, b"precious")
    backend.tamper(digest, b"tampered")
    assert hashlib.sha256(read_all(backend.store, digest)).hexdigest() != digest[7:]


def test_the_store_checks_it_can_be_used(backend: Backend, tmp_path: Path) -> None:
    backend.store.check()
    backend.store.check(writable=False)
    if backend.engine is not None:
        assert backend.leftovers() == [], "the write probe cleans up after itself"
    if backend.engine is None:
        gone = FilesystemBlobStore(tmp_path / "gone")
        (tmp_path / "gone" / "sha256").rmdir()
        with pytest.raises(BlobStoreUnavailable, match="gone"):
            gone.check()
        with pytest.raises(BlobStoreUnavailable, match="gone"):
            gone.check(writable=False)
        return
    missing = s3_store(backend.engine, "no-such-bucket-here")
    with pytest.raises(BlobStoreUnavailable, match="no-such-bucket-here") as refused:
        missing.check()
    assert backend.engine.endpoint in str(refused.value)
    with pytest.raises(BlobStoreUnavailable, match="no-such-bucket-here"):
        missing.check(writable=False)


def test_delivery_by_local_file_or_presigned_url(backend: Backend) -> None:
    data = os.urandom(1000)
    digest = write_all(backend.store, data)
    local = backend.store.local_file(digest)
    if backend.engine is None:
        assert local is not None
        assert Path(local).read_bytes() == data
        assert backend.store.redirect_url(digest) is None
        return
    assert local is None
    url = backend.store.redirect_url(digest)
    assert url is not None
    assert backend.engine.endpoint in url
    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - the engine's own URL
        assert answer.read() == data


def test_what_dead_writers_left_is_cleaned(backend: Backend) -> None:
    store = backend.store
    if isinstance(store, FilesystemBlobStore):
        live = store.writer(digest_of(b"x"), 1)
        orphan = store.temp_dir / "999999999-deadbeef"
        orphan.write_bytes(b"partial")
        assert store.clean_temporary() == 1
        assert not orphan.exists()
        live.write(b"x")
        live.commit()
        assert store.has(digest_of(b"x"))
        return
    assert backend.engine is not None
    # A writer that died mid-blob (a part sent, never completed nor aborted), and an upload
    # that died between staging and placing.
    dead = store.writer(digest_of(b"never"), None)
    dead.write(os.urandom(PART + 1))
    staged = store.upload_writer()
    staged.write(b"staged")
    staged.finish()
    assert len(backend.leftovers()) == 2
    assert store.clean_temporary() == 0, "young leftovers may belong to a live writer"
    sweeper = s3_store(backend.engine, backend.bucket, stale_after=timedelta(0))
    try:
        assert sweeper.clean_temporary() == 2
    finally:
        sweeper.close()
    assert backend.leftovers() == []
    assert list(store.digests()) == []


def test_a_tap_reads_what_was_written_through_commit_or_abort(backend: Backend) -> None:
    """Where a writer stages bytes locally, followers read them from there (no second copy);
    a store that stages them elsewhere says so with None."""
    store = backend.store
    data = os.urandom(PART + 5)
    for finish in ("commit", "abort"):
        writer = store.writer(digest_of(data), len(data))
        tap = writer.tap()
        assert writer.can_tap() == (tap is not None)
        if backend.engine is not None:
            assert tap is None
            writer.abort()
            return
        assert tap is not None
        try:
            writer.write(data[:MiB])
            assert tap.read(0, MiB) == data[:MiB]  # readable as soon as it is written
            writer.write(data[MiB:])
            getattr(writer, finish)()
            writer.abort()
            assert tap.read(MiB - 3, 8) == data[MiB - 3 : MiB + 5]  # still, after rename or unlink
        finally:
            tap.close()
    assert backend.leftovers() == []
