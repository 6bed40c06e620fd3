"""The filesystem blob store's writer for bytes of unknown digest (VM image uploads)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from imagedepot.adapters.blobs.filesystem import FilesystemBlobStore


def test_commit_names_the_blob_by_its_sha256(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    writer = store.upload_writer()
    writer.write(b"hello ")
    writer.write(b"world")
    assert writer.written == 11
    digest = writer.commit()
    writer.abort()
    assert digest == "sha256:" + hashlib.sha256(b"hello world").hexdigest()
    assert store.path(digest).read_bytes() == b"hello world"
    assert list(store.temp_dir.iterdir()) == []


def test_the_same_bytes_again_are_stored_once(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    digests = []
    for _ in range(2):
        writer = store.upload_writer()
        writer.write(b"same")
        digests.append(writer.commit())
    assert digests[0] == digests[1]
    assert list(store.digests()) == [digests[0]]
    assert list(store.temp_dir.iterdir()) == []


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    writer = store.upload_writer()
    writer.write(b"partial")
    writer.abort()
    writer.abort()
    assert list(store.temp_dir.iterdir()) == []
    assert list(store.digests()) == []
