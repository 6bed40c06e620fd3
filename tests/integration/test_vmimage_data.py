"""VM image bytes in-process, on a real SQLite store and blob directory: stored once by sha256,
kept by garbage collection while an image uses them, released when the last one is deleted;
an abandoned upload leaves the image queued and nothing on disk."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from imagedepot.adapters.blobs.filesystem import FilesystemBlobStore
from imagedepot.adapters.clock import SystemClock
from imagedepot.adapters.db.store import SqlMetadataStore
from imagedepot.domain.errors import Conflict
from imagedepot.domain.identity import Principal, Role
from imagedepot.domain.vmimages import ImageStatus, JobType
from imagedepot.services.blobs import BlobService
from imagedepot.services.vmimages import ImageCopy, VmImageService

ALICE = Principal(project_id="p-alice", role=Role.MEMBER, credential_id="c1")


class Harness:
    def __init__(self, root: Path) -> None:
        self.store = SqlMetadataStore(f"sqlite:///{root / 'db.sqlite'}")
        self.blobs = FilesystemBlobStore(root / "blobs")
        self.images = VmImageService(
            self.store, self.blobs, SystemClock(), regions=("r1", "r2"), max_image_bytes=1 << 20
        )
        self.gc = BlobService(self.store, self.blobs, SystemClock(), grace=timedelta(0))

    def uploaded(self, data: bytes, name: str = "disk") -> str:
        image = self.images.create(
            ALICE, {"name": name, "disk_format": "raw", "container_format": "bare"}
        )
        upload = self.images.begin_upload(ALICE, image.id, len(data))
        try:
            for start in range(0, len(data), 1000):
                upload.write(data[start : start + 1000])
            upload.finish()
        finally:
            upload.abort()
        return image.id


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    made = Harness(tmp_path)
    try:
        yield made
    finally:
        made.store.close()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_bytes_are_stored_once_and_kept_while_an_image_uses_them(harness: Harness) -> None:
    data = b"disk bytes " * 500
    first = harness.uploaded(data, "one")
    second = harness.uploaded(data, "two")
    assert list(harness.blobs.digests()) == [digest(data)]
    assert harness.gc.collect() == []
    harness.images.delete(ALICE, first)
    assert harness.gc.collect() == []
    harness.images.delete(ALICE, second)
    assert harness.gc.collect() == [digest(data)]


def test_a_copy_to_another_region_shares_the_blob(harness: Harness) -> None:
    data = b"shared" * 100
    source = harness.uploaded(data)
    jobs = harness.images.copy_images(
        ALICE, [ImageCopy(source, "copy", "r2", JobType.IMPORT, source_region="r1")]
    )
    harness.images.delete(ALICE, source)
    assert harness.gc.collect() == []
    copy = harness.images.get(ALICE, jobs[0].resource_id)
    assert copy.region == "r2"
    assert copy.blob_digest == digest(data)


def test_an_abandoned_upload_leaves_the_image_queued_and_no_file(harness: Harness) -> None:
    image = harness.images.create(ALICE, {"disk_format": "raw", "container_format": "bare"})
    upload = harness.images.begin_upload(ALICE, image.id, None)
    upload.write(b"partial")
    with pytest.raises(Conflict):
        harness.images.begin_upload(ALICE, image.id, None)
    upload.abort()
    assert harness.images.get(ALICE, image.id).status is ImageStatus.QUEUED
    assert list(harness.blobs.digests()) == []
    assert list(harness.blobs.temp_dir.iterdir()) == []


def test_an_upload_over_the_limit_is_refused(harness: Harness) -> None:
    from imagedepot.domain.errors import PayloadTooLarge

    image = harness.images.create(ALICE, {"disk_format": "raw", "container_format": "bare"})
    with pytest.raises(PayloadTooLarge):
        harness.images.begin_upload(ALICE, image.id, 2 << 20)
    upload = harness.images.begin_upload(ALICE, image.id, None)
    with pytest.raises(PayloadTooLarge):
        upload.write(b"\0" * ((1 << 20) + 1))
    upload.abort()
    assert harness.images.get(ALICE, image.id).status is ImageStatus.QUEUED
