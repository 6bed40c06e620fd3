"""Spools on the local disk: an anonymous file (O_TMPFILE where the kernel has it, otherwise
created and unlinked at once) under the data dir, so a crash leaves nothing behind to clean
up and the space returns when the last reader closes it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class FileSpool:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        # A bare descriptor, closed by its owner: no file object to warn when collected.
        try:
            self._fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError:  # a filesystem without O_TMPFILE: create, then unlink at once
            self._fd, name = tempfile.mkstemp(dir=directory)
            os.unlink(name)

    def append(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def truncate(self) -> None:
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class FileSpools:
    """Makes spools in one directory."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def __call__(self) -> FileSpool:
        return FileSpool(self._directory)
