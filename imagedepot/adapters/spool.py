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
        self._file = tempfile.TemporaryFile(dir=directory, buffering=0)  # noqa: SIM115 - owned
        self._fd = self._file.fileno()

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
        self._file.close()


class FileSpools:
    """Makes spools in one directory."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def __call__(self) -> FileSpool:
        return FileSpool(self._directory)
