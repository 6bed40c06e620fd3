"""`fsck` on a real store pair: a blob only a running build waits for is pending, not
missing; one a built cache needs is missing; damage and orphans are reported as such."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from imagedepot.adapters.blobs.filesystem import FilesystemBlobStore
from imagedepot.adapters.db.store import SqlMetadataStore
from imagedepot.domain.caches import CacheSpec, ImageCache
from imagedepot.ports import BlobInfo
from imagedepot.services.blobs import BlobService
from tests.support.clock import MovableClock

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_fsck_tells_in_flight_from_missing(tmp_path: Path) -> None:
    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    try:
        stored, damaged, orphan, cut = b"stored", b"damaged", b"orphan", b"cut short"
        for data in (stored, damaged, orphan, cut):
            blobs.put_bytes(digest_of(data), data)
        blobs.path(digest_of(damaged)).write_bytes(b"bit rot")  # the same length
        blobs.path(digest_of(cut)).write_bytes(b"cut")
        building = ImageCache.new("p", CacheSpec(name="building", images=("a:1",)), NOW)
        built = ImageCache.new("p", CacheSpec(name="built", images=("b:1",)), NOW)
        built.mark_available([], NOW)

        def info(data: bytes) -> BlobInfo:
            return BlobInfo(digest_of(data), len(data), "m")

        with store.transaction() as uow:
            uow.caches.add(building)
            uow.caches.add(built)
            uow.blob_refs.add_refs(building.id, [info(stored), info(b"on its way")])
            uow.blob_refs.add_refs(
                built.id, [info(stored), info(damaged), info(cut), info(b"lost")]
            )

        service = BlobService(store, blobs, MovableClock())
        report = service.fsck()
        assert report.checked == 4
        assert sorted(report.damaged) == sorted([digest_of(damaged), digest_of(cut)])
        assert report.missing == [digest_of(b"lost")]
        assert report.pending == [digest_of(b"on its way")]
        assert report.unreferenced == [digest_of(orphan)]
        assert not report.healthy
        # Quick: sizes against the recorded ones, no bytes read; a same-length change passes.
        quick = service.fsck(quick=True)
        assert quick.damaged == [digest_of(cut)]
        assert quick.missing == report.missing
    finally:
        store.close()
