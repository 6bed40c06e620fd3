import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from imagedepot.adapters.blobs.filesystem import FilesystemBlobStore
from imagedepot.ports import BlobCorrupt


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_verified_blob_lands_at_its_content_address(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = digest_of(data)
    writer = store.writer(digest, len(data))
    for start in range(0, len(data), 1 << 20):
        writer.write(data[start : start + (1 << 20)])
    assert not store.has(digest), "nothing is visible before commit"
    writer.commit()
    hex_part = digest.removeprefix("sha256:")
    assert (tmp_path / "sha256" / hex_part[:2] / hex_part).read_bytes() == data
    assert store.size(digest) == len(data)
    assert store.verify(digest)
    assert list(store.digests()) == [digest]
    assert list(store.temp_dir.iterdir()) == []


def test_wrong_bytes_never_become_visible(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    good = b"hello world"
    writer = store.writer(digest_of(good), len(good))
    writer.write(b"hello WORLD")
    with pytest.raises(BlobCorrupt):
        writer.commit()
    writer.abort()
    assert not store.has(digest_of(good))
    assert list(store.temp_dir.iterdir()) == []


def test_too_many_bytes_are_refused_at_once(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    writer = store.writer(digest_of(b"abc"), 3)
    with pytest.raises(BlobCorrupt):
        writer.write(b"abcd")
    writer.abort()


def test_reset_starts_over(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    data = b"content"
    writer = store.writer(digest_of(data), len(data))
    writer.write(b"garbage")
    writer.reset()
    assert writer.written == 0
    writer.write(data)
    writer.commit()
    assert store.verify(digest_of(data))


def test_fsck_notices_a_damaged_blob(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    data = b"precious"
    store.put_bytes(digest_of(data), data)
    store.path(digest_of(data)).write_bytes(b"tampered")
    assert not store.verify(digest_of(data))


def test_temp_files_of_dead_writers_are_cleaned(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    live = store.writer(digest_of(b"x"), 1)
    orphan = store.temp_dir / "999999999-deadbeef"
    orphan.write_bytes(b"partial")
    assert store.clean_temporary() == 1
    assert not orphan.exists()
    live.write(b"x")
    live.commit()
    assert store.has(digest_of(b"x"))


def test_collection_waits_for_reuse_decisions(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    events: list[str] = []
    with store.reuse_guard():
        collector = threading.Thread(target=lambda: _collect(store, events))
        collector.start()
        time.sleep(0.2)
        events.append("reuse done")
    collector.join()
    assert events == ["reuse done", "collected"]


def _collect(store: FilesystemBlobStore, events: list[str]) -> None:
    with store.collect_guard():
        events.append("collected")
