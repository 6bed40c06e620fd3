"""The filesystem blob store: `ROOT/sha256/<2 hex>/<64 hex>`, holding exactly the bytes whose sha256 is the name.

A writer streams into `ROOT/tmp/`, hashing as it goes; only `commit()` — size and
digest checked, data fsync'd — renames the file into place, so a reader never
sees a partial or unverified blob. Garbage collection and blob reuse are coordinated
through the metadata store, not here; `path()` is this backend's own way of serving (the
HTTP layer hands the file to `sendfile`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from imagedepot.adapters.blobs.promises import Promise, Tally
from imagedepot.adapters.processes import fsync_directory, process_alive
from imagedepot.domain.references import DIGEST_RE
from imagedepot.ports import (
    BlobCorrupt,
    BlobStore,
    BlobStoreFull,
    BlobStoreUnavailable,
    write_blob,
)

CHUNK = 1 << 20
STALE_TEMP_SECONDS = 24 * 3600


class _HashedTempFile:
    """A temp file in the store's tmp dir, sha256-hashed as bytes arrive, that becomes a blob
    only through `_place`: fsync'd, renamed to its content address, directory fsync'd."""

    def __init__(self, store: FilesystemBlobStore) -> None:
        self._store = store
        self._temp = store.temp_dir / f"{os.getpid()}-{secrets.token_hex(8)}"
        self._file = open(self._temp, "xb", buffering=CHUNK)  # noqa: SIM115 - lives until commit/abort
        self._tally = Tally()
        self._closed = False
        self._placed = False
        self._final: Path | None = None
        """Where the bytes went once placed (set before they move)."""

    @property
    def written(self) -> int:
        return self._tally.written

    def _append(self, chunk: bytes) -> None:
        with full_disk_as_store_full(self):
            self._file.write(chunk)
            # In the file (not a buffer) before anyone is told it was written: a follower
            # reads it from there.
            self._file.flush()
        self._tally.add(chunk)

    def can_tap(self) -> bool:
        return True

    def tap(self) -> FileTap:
        """A reader of the staged file, valid after it is renamed into place or unlinked;
        once placed, of the blob it became (the same bytes)."""
        try:
            return FileTap(os.open(self._temp, os.O_RDONLY | os.O_CLOEXEC))
        except FileNotFoundError:
            if self._final is None:
                raise  # thrown away: there is nothing to follow
            return FileTap(os.open(self._final, os.O_RDONLY | os.O_CLOEXEC))

    def _make_durable(self) -> None:
        if self._closed:
            return
        with full_disk_as_store_full(self):
            self._file.flush()
            os.fsync(self._file.fileno())
        self._file.close()
        self._closed = True

    def _place(self, digest: str) -> None:
        self._make_durable()
        final = self._store.path(digest)
        if self._placed:
            return
        self._final = final
        if final.is_file():  # the same bytes, by their hash: keep the stored copy
            self._temp.unlink()
            self._placed = True
            return
        with full_disk_as_store_full(self):
            final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._temp, final)
        fsync_directory(final.parent)
        self._placed = True

    def abort(self) -> None:
        if not self._closed:
            self._closed = True
            # Closing flushes the buffer, which fails on a full disk: the file goes anyway.
            with contextlib.suppress(OSError):
                self._file.close()
        if not self._placed:
            with contextlib.suppress(FileNotFoundError):
                self._temp.unlink()


@contextlib.contextmanager
def full_disk_as_store_full(writer: _HashedTempFile) -> Iterator[None]:
    """ENOSPC and EDQUOT as BlobStoreFull, with the staged bytes thrown away at once (a full
    disk must not keep what cannot become a blob)."""
    try:
        yield
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        writer.abort()
        free = shutil.disk_usage(writer._store.root).free
        raise BlobStoreFull(
            f"no room left on the blob store's disk ({writer._store.root}: {free} bytes free)"
        ) from None


class FileTap:
    """Reads of a file through a descriptor of its own."""

    def __init__(self, descriptor: int) -> None:
        self._descriptor = descriptor

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self._descriptor, size, offset)

    def close(self) -> None:
        if self._descriptor >= 0:
            os.close(self._descriptor)
            self._descriptor = -1


class FilesystemBlobWriter(_HashedTempFile):
    """Bytes promised to have a digest (and a size): refused unless they do."""

    def __init__(self, store: FilesystemBlobStore, digest: str, size: int | None) -> None:
        super().__init__(store)
        self._digest = digest
        self._promise = Promise(digest, size)

    def write(self, chunk: bytes) -> None:
        self._promise.check_room(self._tally, len(chunk))
        self._append(chunk)

    def reset(self) -> None:
        self._file.seek(0)
        self._file.truncate()
        self._tally = Tally()

    def commit(self) -> None:
        self._promise.check_kept(self._tally)
        self._place(self._digest)


class FilesystemUploadWriter(_HashedTempFile):
    """Bytes of an unknown digest: hashed as they stream into a temp file, then renamed to
    their content address (or dropped when the store already holds those bytes)."""

    def write(self, chunk: bytes) -> None:
        if self._closed:
            raise ValueError("the upload is finished")
        self._append(chunk)

    def finish(self) -> str:
        self._make_durable()
        return self._tally.digest()

    def commit(self) -> str:
        digest = self.finish()
        self._place(digest)
        return digest


def _chunks(file: BinaryIO, length: int | None) -> Iterator[bytes]:
    left = length
    while left is None or left > 0:
        chunk = file.read(CHUNK if left is None else min(CHUNK, left))
        if not chunk:
            return
        if left is not None:
            left -= len(chunk)
        yield chunk


class FilesystemBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.temp_dir = root / "tmp"
        (root / "sha256").mkdir(parents=True, exist_ok=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not DIGEST_RE.match(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        hex_part = digest.removeprefix("sha256:")
        return self.root / "sha256" / hex_part[:2] / hex_part

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int | None:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def open(
        self, digest: str, start: int = 0, length: int | None = None
    ) -> Iterator[Iterator[bytes]]:
        with self.path(digest).open("rb") as file:
            if start:
                file.seek(start)
            yield _chunks(file, length)

    def writer(self, digest: str, size: int | None) -> FilesystemBlobWriter:
        self.path(digest)  # refuse a malformed digest before creating anything
        return FilesystemBlobWriter(self, digest, size)

    def upload_writer(self) -> FilesystemUploadWriter:
        return FilesystemUploadWriter(self)

    def put_bytes(self, digest: str, data: bytes) -> None:
        write_blob(self.writer(digest, len(data)), [data])

    def read_bytes(self, digest: str, limit: int) -> bytes:
        with self.path(digest).open("rb") as file:
            data = file.read(limit + 1)
        if len(data) > limit:
            raise BlobCorrupt(f"blob {digest} is larger than {limit} bytes")
        return data

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def digests(self) -> Iterator[str]:
        for path in (self.root / "sha256").glob("*/*"):
            if path.is_file() and len(path.name) == 64:
                yield "sha256:" + path.name

    def local_file(self, digest: str) -> str | None:
        return str(self.path(digest))

    def redirect_url(self, digest: str) -> str | None:
        return None

    def check(self, *, writable: bool = True) -> None:
        mode = os.W_OK | os.X_OK if writable else os.R_OK | os.X_OK
        for directory in (self.root / "sha256", self.temp_dir):
            if not directory.is_dir() or not os.access(directory, mode):
                needed = "writable" if writable else "readable"
                raise BlobStoreUnavailable(f"blob directory {directory} is not {needed}")

    def close(self) -> None:
        """Nothing is held open between calls."""

    def clean_temporary(self) -> int:
        """Remove temp files of writers whose process is gone, or that are a day old."""
        removed = 0
        for temp in self._dead_temporaries():
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
                removed += 1
        return removed

    def leftovers(self) -> list[str]:
        found = []
        for temp in self._dead_temporaries():
            with contextlib.suppress(FileNotFoundError):
                found.append(f"{temp} ({temp.stat().st_size} bytes)")
        return found

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def _dead_temporaries(self) -> Iterator[Path]:
        now = time.time()
        for temp in self.temp_dir.iterdir():
            pid_text = temp.name.split("-", 1)[0]
            alive = pid_text.isdigit() and process_alive(int(pid_text))
            try:
                stale = now - temp.stat().st_mtime > STALE_TEMP_SECONDS
            except FileNotFoundError:
                continue
            if not alive or stale:
                yield temp


if TYPE_CHECKING:
    _conforms: type[BlobStore] = FilesystemBlobStore
