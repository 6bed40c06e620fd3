"""Real disk image files made with Debian's `qemu-img` (package qemu-utils), for tests of the
format inspector and of uploads; small and sparse, so they stay quick."""

from __future__ import annotations

import subprocess
from pathlib import Path

from imagedepot.domain.diskformats import PREFIX_BYTES, TAIL_BYTES, HeaderView
from tests.support.registry import require_binary

QEMU_IMG = "/usr/bin/qemu-img"


def make_disk(path: Path, fmt: str, size: str = "64M", *options: str) -> Path:
    """`qemu-img create -f FMT [-o OPTION …] PATH SIZE`; skipped (failed under CI) without it."""
    command = [require_binary(QEMU_IMG), "create", "-q", "-f", fmt]
    for option in options:
        command += ["-o", option]
    subprocess.run([*command, str(path), size], check=True, capture_output=True, timeout=60)
    return path


def header_view(path: Path) -> HeaderView:
    """What an upload keeps of the file: its first bytes and its last sector (never all)."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(PREFIX_BYTES)
        handle.seek(max(0, size - TAIL_BYTES))
        tail = handle.read(TAIL_BYTES)
    return HeaderView(prefix, tail, size)
