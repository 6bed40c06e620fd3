"""What every backend's writer keeps and checks before a blob may become visible: a tally of
the bytes taken (how many, and their sha256 so far), and the promise they were written
under (a digest and, when known, a size), kept or refused as BlobCorrupt."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from imagedepot.ports import BlobCorrupt


class Tally:
    """The bytes a writer has taken so far."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.written = 0

    def add(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.written += len(chunk)

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


@dataclass(frozen=True)
class Promise:
    digest: str
    size: int | None

    def check_room(self, tally: Tally, more: int) -> None:
        """Refuse at once the bytes past the promised size."""
        if self.size is not None and tally.written + more > self.size:
            raise BlobCorrupt(f"blob {self.digest} is longer than its declared {self.size} bytes")

    def check_kept(self, tally: Tally) -> None:
        """The whole blob is in: its length and digest are the promised ones."""
        if self.size is not None and tally.written != self.size:
            raise BlobCorrupt(f"blob {self.digest} has {tally.written} bytes, expected {self.size}")
        actual = tally.digest()
        if actual != self.digest:
            raise BlobCorrupt(f"blob {self.digest} has digest {actual}")
