"""What every backend's writer checks before a blob may become visible: bytes promised to have
a digest (and, when known, a size) keep the promise, or are refused as BlobCorrupt."""

from __future__ import annotations

from dataclasses import dataclass

from imagedepot.ports import BlobCorrupt


@dataclass(frozen=True)
class Promise:
    digest: str
    size: int | None

    def check_room(self, written: int, more: int) -> None:
        """Refuse at once the bytes past the promised size."""
        if self.size is not None and written + more > self.size:
            raise BlobCorrupt(f"blob {self.digest} is longer than its declared {self.size} bytes")

    def check_kept(self, written: int, actual_digest: str) -> None:
        """The whole blob is in: its length and digest are the promised ones."""
        if self.size is not None and written != self.size:
            raise BlobCorrupt(f"blob {self.digest} has {written} bytes, expected {self.size}")
        if actual_digest != self.digest:
            raise BlobCorrupt(f"blob {self.digest} has digest {actual_digest}")
