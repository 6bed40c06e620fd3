"""A pure-Python disk image inspector: which format uploaded bytes really are, their virtual
size, and whether they are safe to hand to a hypervisor.

Uploaded images are never given to an external tool. A qcow2 that names a backing file or an
external data file, or a VMDK whose extents live outside itself, would make the host read
files the uploader chose (the class of hole behind Glance's format-inspector advisories), so
they are refused; so is data whose header contradicts the declared `disk_format`.

The inspector reads through `HeaderView`: the first bytes of the image and its last sector,
which an upload keeps while it streams (bounded memory, whatever the image size).
"""

from __future__ import annotations

import re
import struct
import uuid
from dataclasses import dataclass

from imagedepot.domain.errors import InvalidInput

SECTOR = 512
PREFIX_BYTES = 4 * 1024 * 1024
"""How much of the start of an image the inspector may read."""
TAIL_BYTES = SECTOR

QCOW2_MAGIC = b"QFI\xfb"
QCOW2_EXTERNAL_DATA_FILE_BIT = 1 << 2
QCOW2_EXTENSION_DATA_FILE = 0x44415441
QCOW2_EXTENSION_END = 0
VMDK_MAGIC = b"KDMV"
VMDK_DESCRIPTOR_TEXT = b"# Disk DescriptorFile"
VMDK_SAFE_CREATE_TYPES = ("monolithicSparse", "streamOptimized")
VHD_COOKIE = b"conectix"
VHDX_SIGNATURE = b"vhdxfile"
VHDX_REGION_TABLE_OFFSET = 192 * 1024
VHDX_METADATA_REGION = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e")
VHDX_VIRTUAL_DISK_SIZE = uuid.UUID("2fa54224-cd1b-4876-b211-5dbed83bf4b8")
VDI_SIGNATURE = 0xBEDA107F
VDI_SIGNATURE_OFFSET = 0x40
VDI_SIZE_OFFSET = 0x170
ISO_DESCRIPTOR_OFFSET = 0x8000
ISO_MAGIC = b"CD001"

CHECKED_FORMATS = ("qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso", "raw")
"""The disk formats whose bytes are verified; others (ami, aki, ari, ploop) are taken as given."""


class OutOfView(Exception):
    """The inspector needed bytes beyond what the upload kept."""


@dataclass(frozen=True)
class HeaderView:
    """The first bytes of an image, its last bytes, and its full size."""

    prefix: bytes
    tail: bytes
    size: int

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise InvalidInput(
                f"the image header points past the end of the data (offset {offset})",
                field="disk_format",
            )
        if offset + length <= len(self.prefix):
            return self.prefix[offset : offset + length]
        tail_start = self.size - len(self.tail)
        if offset >= tail_start:
            return self.tail[offset - tail_start : offset - tail_start + length]
        raise OutOfView(offset)


@dataclass(frozen=True)
class DiskInfo:
    format: str
    virtual_size: int | None


def _refuse(message: str) -> InvalidInput:
    return InvalidInput(message, field="disk_format")


def _qcow2(view: HeaderView) -> DiskInfo:
    header = view.read(0, 72)
    version, backing_offset, backing_size = struct.unpack(">IQI", header[4:20])
    virtual_size = struct.unpack(">Q", header[24:32])[0]
    if version not in (2, 3):
        raise _refuse(f"qcow2 version {version} is not supported")
    if backing_offset != 0 or backing_size != 0:
        raise _refuse("qcow2 images with a backing file are refused")
    header_length = 72
    if version == 3:
        v3 = view.read(72, 32)
        incompatible = struct.unpack(">Q", v3[0:8])[0]
        if incompatible & QCOW2_EXTERNAL_DATA_FILE_BIT:
            raise _refuse("qcow2 images with an external data file are refused")
        header_length = struct.unpack(">I", v3[28:32])[0]
        if header_length < 104:
            raise _refuse(f"qcow2 header length {header_length} is too short")
    offset = header_length
    while True:
        kind, length = struct.unpack(">II", view.read(offset, 8))
        if kind == QCOW2_EXTENSION_END:
            break
        if kind == QCOW2_EXTENSION_DATA_FILE:
            raise _refuse("qcow2 images with an external data file are refused")
        offset += 8 + (length + 7) // 8 * 8
    return DiskInfo("qcow2", virtual_size)


_EXTENT_LINE = re.compile(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)(?:\s+"([^"]*)")?', re.MULTILINE)
_CREATE_TYPE = re.compile(r'^createType\s*=\s*"([^"]*)"', re.MULTILINE)


def _vmdk(view: HeaderView) -> DiskInfo:
    header = view.read(0, 512)
    capacity, _grain, descriptor_sector, descriptor_sectors = struct.unpack("<QQQQ", header[12:44])
    if descriptor_sector == 0 or descriptor_sectors == 0:
        # streamOptimized images may keep the descriptor elsewhere; without one nothing points out.
        return DiskInfo("vmdk", capacity * SECTOR)
    raw = view.read(descriptor_sector * SECTOR, min(descriptor_sectors * SECTOR, 64 * 1024))
    text = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    create_type = _CREATE_TYPE.search(text)
    if create_type is None or create_type.group(1) not in VMDK_SAFE_CREATE_TYPES:
        found = create_type.group(1) if create_type else "none"
        raise _refuse(
            f"vmdk createType {found!r} is refused: only "
            f"{' and '.join(VMDK_SAFE_CREATE_TYPES)} keep their data inside the image"
        )
    extents = _EXTENT_LINE.findall(text)
    if len(extents) != 1 or extents[0][2] != "SPARSE":
        raise _refuse("vmdk images whose extents point outside themselves are refused")
    return DiskInfo("vmdk", capacity * SECTOR)


def _vhd_footer(footer: bytes) -> int:
    return int(struct.unpack(">Q", footer[48:56])[0])


def _vhdx(view: HeaderView) -> DiskInfo:
    try:
        table = view.read(VHDX_REGION_TABLE_OFFSET, 16 + 32 * 16)
    except OutOfView:
        return DiskInfo("vhdx", None)
    if table[0:4] != b"regi":
        raise _refuse("vhdx region table is missing")
    count = min(struct.unpack("<I", table[8:12])[0], 16)
    for index in range(count):
        entry = table[16 + index * 32 : 48 + index * 32]
        if uuid.UUID(bytes_le=entry[0:16]) != VHDX_METADATA_REGION:
            continue
        region = struct.unpack("<Q", entry[16:24])[0]
        try:
            metadata = view.read(region, 32 + 32 * 16)
        except OutOfView:
            return DiskInfo("vhdx", None)
        if metadata[0:8] != b"metadata":
            raise _refuse("vhdx metadata table is missing")
        entries = min(struct.unpack("<H", metadata[10:12])[0], 16)
        for item in range(entries):
            raw = metadata[32 + item * 32 : 64 + item * 32]
            if uuid.UUID(bytes_le=raw[0:16]) == VHDX_VIRTUAL_DISK_SIZE:
                offset = struct.unpack("<I", raw[16:20])[0]
                try:
                    return DiskInfo("vhdx", struct.unpack("<Q", view.read(region + offset, 8))[0])
                except OutOfView:
                    return DiskInfo("vhdx", None)
    return DiskInfo("vhdx", None)


def _iso(view: HeaderView) -> DiskInfo:
    descriptor = view.read(ISO_DESCRIPTOR_OFFSET, 2048)
    blocks = struct.unpack("<I", descriptor[80:84])[0]
    block_size = struct.unpack("<H", descriptor[128:130])[0]
    return DiskInfo("iso", blocks * block_size)


def _has(view: HeaderView, offset: int, magic: bytes) -> bool:
    try:
        return view.read(offset, len(magic)) == magic
    except (InvalidInput, OutOfView):
        return False


def detect(view: HeaderView) -> DiskInfo:
    """The format the bytes are, with their virtual size; InvalidInput when they are unsafe."""
    if _has(view, 0, QCOW2_MAGIC):
        return _qcow2(view)
    if _has(view, 0, VMDK_MAGIC):
        return _vmdk(view)
    if _has(view, 0, VMDK_DESCRIPTOR_TEXT):
        raise _refuse("a vmdk descriptor file keeps its data in other files; it is refused")
    if _has(view, 0, VHDX_SIGNATURE):
        return _vhdx(view)
    if _has(view, 0, VHD_COOKIE):
        return DiskInfo("vhd", _vhd_footer(view.read(0, SECTOR)))
    if view.size >= SECTOR and _has(view, view.size - SECTOR, VHD_COOKIE):
        return DiskInfo("vhd", _vhd_footer(view.read(view.size - SECTOR, SECTOR)))
    if _has(view, VDI_SIGNATURE_OFFSET, struct.pack("<I", VDI_SIGNATURE)):
        return DiskInfo("vdi", struct.unpack("<Q", view.read(VDI_SIZE_OFFSET, 8))[0])
    if _has(view, ISO_DESCRIPTOR_OFFSET + 1, ISO_MAGIC):
        return _iso(view)
    return DiskInfo("raw", view.size)


def inspect(view: HeaderView, declared: str) -> int | None:
    """Check the bytes against the declared disk format; their virtual size.

    A declared format that is not checked (ami, aki, ari, ploop) is accepted as it is. The
    bytes of a raw image must not be a recognised format (a qcow2 uploaded as raw would be
    read as qcow2 by a careless host); an iso may be anything an iso can be.
    """
    if declared not in CHECKED_FORMATS:
        return None
    info = detect(view)
    if info.format == declared:
        return info.virtual_size
    if declared == "iso" and info.format == "raw":
        raise _refuse("the data is not an iso image (no CD001 volume descriptor)")
    raise _refuse(f"disk_format is {declared} but the data is a {info.format} image")
