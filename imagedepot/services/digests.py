"""Glance's md5 checksum and sha512 `os_hash_value` of an upload, computed on threads of their
own while the upload's thread writes the bytes (and the blob store hashes them with sha256):
one after another, the three hashes held a 500 MB upload to one core. hashlib releases the
GIL on large buffers, so the bytes are handed over in batches of a MiB; each hash takes its
batches in order, one in flight at a time, so memory stays at a few batches per upload.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final

BATCH: Final = 1 << 20
_POOL: Final = ThreadPoolExecutor(4, thread_name_prefix="upload-digest")


class UploadDigests:
    def __init__(self) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha512 = hashlib.sha512()
        self._batch = bytearray()
        self._in_flight: list[Future[None]] = []

    def update(self, chunk: bytes) -> None:
        """Hash `chunk`; one of a batch's size or more (an upload's blocks are) is handed to
        the hashes as it is, with no copy into a batch."""
        if not self._batch and len(chunk) >= BATCH:
            self._hand_over(chunk)
            return
        self._batch += chunk
        if len(self._batch) >= BATCH:
            self._hand_over_batch()

    def _hand_over_batch(self) -> None:
        batch, self._batch = self._batch, bytearray()
        self._hand_over(batch)

    def _hand_over(self, batch: bytes | bytearray) -> None:
        self._settle()
        self._in_flight = [
            _POOL.submit(self._md5.update, batch),
            _POOL.submit(self._sha512.update, batch),
        ]

    def _settle(self) -> None:
        for future in self._in_flight:
            future.result()
        self._in_flight = []

    def hexdigests(self) -> tuple[str, str]:
        """(md5, sha512) of everything given, once the last batch is hashed."""
        if self._batch:
            self._hand_over_batch()
        self._settle()
        return self._md5.hexdigest(), self._sha512.hexdigest()
