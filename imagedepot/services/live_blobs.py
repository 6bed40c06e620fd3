"""A blob while it downloads, followed by the clients that asked for it before it was stored.

The download writes into the blob store; every client that wants the blob reads behind it,
from the writer's own staged file (the filesystem backend) or from a spool the same writes
feed (S3, where the staged bytes are in the bucket), so a first pull through the
registry port streams at the upstream's pace instead of waiting for the whole blob. What a
client is never given is a blob that does not match its digest: the last byte is held back
until the store has verified and committed the whole blob, and when verification fails (or
the download starts over after the client had bytes) the client's response is cut short, which
every registry client reads as a failed transfer and retries. Stream-and-abort, not
verify-then-serve: a client's first byte comes when the upstream's does.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

from imagedepot.ports import BlobWriter, ByteReader, Spool

FOLLOW_CHUNK = 1024 * 1024
SpoolMaker = Callable[[], Spool]


class LiveBlobFailed(Exception):
    """The download a client followed failed, or started over after the client had bytes:
    its response must be cut short."""


class LiveBlob:
    def __init__(self, size: int, loop: asyncio.AbstractEventLoop) -> None:
        self.size = size
        self._reader: ByteReader | None = None
        self._open_reader: Callable[[], ByteReader | None] | None = None
        self._spool: Spool | None = None
        self._loop = loop
        self._lock = threading.Lock()
        self._written = 0
        self._restarts = 0
        self._broken = False
        self._outcome: bool | None = None
        self._changed = asyncio.Event()

    def __del__(self) -> None:
        # The bytes stay readable as long as anything can still read them: the download, and
        # every follower (a suspended `follow()` holds this object), however each ends.
        if self._reader is not None:
            self._reader.close()

    def attach(
        self,
        *,
        spool: Spool | None = None,
        open_reader: Callable[[], ByteReader | None] | None = None,
    ) -> None:
        """Where followers read (before the download writes anything): `spool`, which the
        download then feeds, or what `open_reader` opens when the first follower comes (the
        writer's own staged file: nothing is held open while nobody follows, so a download
        that fails gives its space back at once). Neither: it cannot be followed."""
        self._spool, self._reader, self._open_reader = spool, spool, open_reader

    def _readable(self) -> ByteReader:
        with self._lock:
            if self._reader is None and self._open_reader is not None:
                try:
                    self._reader = self._open_reader()
                except OSError:
                    self._reader = None  # the staged file is gone: finished meanwhile
                self._open_reader = None
            if self._reader is None:
                raise LiveBlobFailed("the download can no longer be followed")
            return self._reader

    # --- the download's side (called from the writer's thread) -----------------------------

    def append(self, chunk: bytes) -> None:
        with self._lock:
            if self._broken:
                return
            try:
                if self._spool is not None:
                    self._spool.append(chunk)
            except OSError:
                # A full spool disk must not fail the download: only its followers fail.
                self._broken = True
            else:
                self._written += len(chunk)
        self._loop.call_soon_threadsafe(self._changed.set)

    def restart(self) -> None:
        with self._lock:
            if not self._broken and self._spool is not None:
                self._spool.truncate()
            self._written = 0
            self._restarts += 1
        self._loop.call_soon_threadsafe(self._changed.set)

    # --- the event loop's side ------------------------------------------------------------

    def finish(self, committed: bool) -> None:
        """The download ended: committed (verified and stored) or not."""
        self._outcome = committed
        self._changed.set()

    @property
    def followable(self) -> bool:
        """Whether a new client can still follow it (not finished, something to read)."""
        readable = self._reader is not None or self._open_reader is not None
        return self._outcome is None and not self._broken and readable

    async def follow(self) -> AsyncIterator[bytes]:
        """The blob's bytes in order; LiveBlobFailed when the download fails or starts over
        after some were given."""
        offset, restarts = 0, self._restarts
        while True:
            self._changed.clear()  # before reading the state: a change after it wakes us
            if self._broken or self._outcome is False:
                raise LiveBlobFailed("the download of the blob failed")
            if restarts != self._restarts:
                if offset:
                    raise LiveBlobFailed("the download started over")
                restarts = self._restarts
            # The last byte only once the store holds the verified blob.
            limit = self._written if self._outcome else min(self._written, self.size - 1)
            if offset < limit:
                reader = await asyncio.to_thread(self._readable)
                chunk = await asyncio.to_thread(
                    reader.read, offset, min(limit - offset, FOLLOW_CHUNK)
                )
                if restarts != self._restarts:
                    continue
                if not chunk:
                    raise LiveBlobFailed("the spool ended before the bytes it was given")
                offset += len(chunk)
                yield chunk
                continue
            if self._outcome and offset >= self.size:
                return
            await self._changed.wait()


class FollowedWriter:
    """A BlobWriter that also feeds a LiveBlob, so clients can follow the download."""

    def __init__(self, inner: BlobWriter, live: LiveBlob) -> None:
        self._inner = inner
        self._live = live

    @property
    def written(self) -> int:
        return self._inner.written

    def write(self, chunk: bytes) -> None:
        self._inner.write(chunk)
        self._live.append(chunk)

    def reset(self) -> None:
        self._inner.reset()
        self._live.restart()

    def commit(self) -> None:
        self._inner.commit()

    def abort(self) -> None:
        self._inner.abort()

    def can_tap(self) -> bool:
        return self._inner.can_tap()

    def tap(self) -> ByteReader | None:
        return self._inner.tap()
