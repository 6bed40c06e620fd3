"""Real disk image files made with Debian's `qemu-img` (package qemu-utils), for tests of the
format inspector and of uploads; small and sparse, so they stay quick."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from imagedepot.domain.diskformats import PREFIX_BYTES, TAIL_BYTES, HeaderView
from tests.support.registry import require_binary

QEMU_IMG = "/usr/bin/qemu-img"
GIB = 1 << 30


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


def qcow2(
    *,
    version: int = 3,
    size: int = GIB,
    backing: bytes = b"",
    incompatible: int = 0,
    extensions: list[tuple[int, bytes]] | None = None,
) -> bytes:
    header_length = 104 if version == 3 else 72
    body = bytearray(65536)
    backing_offset = 4096 if backing else 0
    struct.pack_into(
        ">4sIQIIQ", body, 0, b"QFI\xfb", version, backing_offset, len(backing), 16, size
    )
    if version == 3:
        struct.pack_into(">Q", body, 72, incompatible)
        struct.pack_into(">I", body, 100, header_length)
    offset = header_length
    for kind, data in extensions or []:
        struct.pack_into(">II", body, offset, kind, len(data))
        body[offset + 8 : offset + 8 + len(data)] = data
        offset += 8 + (len(data) + 7) // 8 * 8
    struct.pack_into(">II", body, offset, 0, 0)
    if backing:
        body[4096 : 4096 + len(backing)] = backing
    return bytes(body)
