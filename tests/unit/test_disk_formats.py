"""The disk format inspector on headers built here byte by byte: each format's virtual size,
and the malicious shapes (backing file, external data file, extents outside the image, a
header that lies about the format) refused with a message naming disk_format."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest

from imagedepot.domain.diskformats import (
    PREFIX_BYTES,
    VHDX_METADATA_REGION,
    VHDX_VIRTUAL_DISK_SIZE,
    HeaderView,
    detect,
    inspect,
)
from imagedepot.domain.errors import InvalidInput
from tests.support.disks import header_view, make_disk, qcow2

GIB = 1 << 30


def view(data: bytes) -> HeaderView:
    return HeaderView(data[:PREFIX_BYTES], data[-512:], len(data))


def vmdk(descriptor: str, capacity_sectors: int = 2048 * 1024) -> bytes:
    body = bytearray(1024 * 64)
    struct.pack_into("<4sII", body, 0, b"KDMV", 1, 3)
    struct.pack_into("<QQQQ", body, 12, capacity_sectors, 128, 1, 20)
    text = descriptor.encode()
    body[512 : 512 + len(text)] = text
    return bytes(body)


SAFE_DESCRIPTOR = """# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="monolithicSparse"

# Extent description
RW 2097152 SPARSE "disk.vmdk"
"""


def test_qcow2_virtual_size() -> None:
    assert inspect(view(qcow2(size=5 * GIB)), "qcow2") == 5 * GIB
    assert inspect(view(qcow2(version=2, size=GIB)), "qcow2") == GIB


def test_qcow2_with_a_backing_file_is_refused() -> None:
    with pytest.raises(InvalidInput, match="backing file") as raised:
        inspect(view(qcow2(backing=b"/etc/shadow")), "qcow2")
    assert raised.value.field == "disk_format"


def test_qcow2_with_an_external_data_file_is_refused() -> None:
    with pytest.raises(InvalidInput, match="external data file"):
        inspect(view(qcow2(incompatible=1 << 2)), "qcow2")
    with pytest.raises(InvalidInput, match="external data file"):
        inspect(view(qcow2(extensions=[(0x44415441, b"/dev/sda")])), "qcow2")


def test_qcow2_with_harmless_extensions_passes() -> None:
    assert inspect(view(qcow2(extensions=[(0x6803F857, b"\0" * 48)])), "qcow2") == GIB


def test_a_qcow2_declared_raw_is_refused_and_raw_passes() -> None:
    with pytest.raises(InvalidInput, match="disk_format is raw but the data is a qcow2"):
        inspect(view(qcow2()), "raw")
    plain = b"\x01" * 10000
    assert inspect(view(plain), "raw") == 10000
    with pytest.raises(InvalidInput, match="qcow2"):
        inspect(view(plain), "qcow2")


def test_vmdk_monolithic_sparse_passes() -> None:
    assert inspect(view(vmdk(SAFE_DESCRIPTOR)), "vmdk") == 2048 * 1024 * 512


def test_vmdk_with_extents_outside_itself_is_refused() -> None:
    flat = SAFE_DESCRIPTOR.replace('"monolithicSparse"', '"monolithicFlat"').replace(
        'SPARSE "disk.vmdk"', 'FLAT "/etc/passwd" 0'
    )
    with pytest.raises(InvalidInput, match="createType"):
        inspect(view(vmdk(flat)), "vmdk")
    two = SAFE_DESCRIPTOR + 'RW 2097152 SPARSE "other.vmdk"\n'
    with pytest.raises(InvalidInput, match="extents"):
        inspect(view(vmdk(two)), "vmdk")
    with pytest.raises(InvalidInput, match="descriptor file"):
        inspect(view(SAFE_DESCRIPTOR.encode()), "vmdk")


def test_vhd_footer_at_the_end_and_dynamic_copy_at_the_start() -> None:
    footer = bytearray(512)
    footer[0:8] = b"conectix"
    struct.pack_into(">Q", footer, 48, 3 * GIB)
    fixed = b"\0" * 4096 + bytes(footer)
    assert inspect(view(fixed), "vhd") == 3 * GIB
    dynamic = bytes(footer) + b"\0" * 4096
    assert detect(view(dynamic)).format == "vhd"


def test_vhdx_virtual_size_from_the_metadata_region() -> None:
    body = bytearray(1024 * 1024)
    body[0:8] = b"vhdxfile"
    table = 192 * 1024
    body[table : table + 4] = b"regi"
    struct.pack_into("<I", body, table + 8, 1)
    metadata_at = 512 * 1024
    body[table + 16 : table + 32] = VHDX_METADATA_REGION.bytes_le
    struct.pack_into("<QI", body, table + 32, metadata_at, 65536)
    body[metadata_at : metadata_at + 8] = b"metadata"
    struct.pack_into("<H", body, metadata_at + 10, 2)
    body[metadata_at + 32 : metadata_at + 48] = uuid.uuid4().bytes_le
    body[metadata_at + 64 : metadata_at + 80] = VHDX_VIRTUAL_DISK_SIZE.bytes_le
    struct.pack_into("<I", body, metadata_at + 80, 4096)
    struct.pack_into("<Q", body, metadata_at + 4096, 7 * GIB)
    assert inspect(view(bytes(body)), "vhdx") == 7 * GIB


def test_vdi_and_iso() -> None:
    vdi = bytearray(4096)
    vdi[0:40] = b"<<< Oracle VM VirtualBox Disk Image >>>\n"
    struct.pack_into("<I", vdi, 0x40, 0xBEDA107F)
    struct.pack_into("<Q", vdi, 0x170, 2 * GIB)
    assert inspect(view(bytes(vdi)), "vdi") == 2 * GIB

    iso = bytearray(0x8000 + 4096)
    iso[0x8000] = 1
    iso[0x8001:0x8006] = b"CD001"
    struct.pack_into("<I", iso, 0x8000 + 80, 100)
    struct.pack_into("<H", iso, 0x8000 + 128, 2048)
    assert inspect(view(bytes(iso)), "iso") == 100 * 2048
    with pytest.raises(InvalidInput, match="not an iso"):
        inspect(view(b"\0" * 100), "iso")


def test_a_header_pointing_past_the_end_is_refused() -> None:
    truncated = qcow2()[:80]
    with pytest.raises(InvalidInput, match="past the end"):
        inspect(view(truncated), "qcow2")


def test_unchecked_formats_are_taken_as_given() -> None:
    assert inspect(view(qcow2()), "ami") is None


# --- real files made by qemu-img --------------------------------------------------------------

MIB64 = 64 << 20


@pytest.mark.parametrize(
    ("fmt", "options", "declared", "virtual_size"),
    [
        ("qcow2", (), "qcow2", MIB64),
        ("qcow2", ("compat=0.10",), "qcow2", MIB64),
        ("vmdk", (), "vmdk", MIB64),
        ("vmdk", ("subformat=streamOptimized",), "vmdk", MIB64),
        ("vhdx", (), "vhdx", MIB64),
        ("vdi", (), "vdi", MIB64),
        ("vpc", (), "vhd", 67125248),  # qemu rounds a VHD to whole CHS cylinders
        ("vpc", ("subformat=fixed",), "vhd", 67125248),
        ("raw", (), "raw", MIB64),
    ],
)
def test_qemu_img_files(
    tmp_path: Path, fmt: str, options: tuple[str, ...], declared: str, virtual_size: int
) -> None:
    disk = make_disk(tmp_path / f"disk.{fmt}", fmt, "64M", *options)
    assert inspect(header_view(disk), declared) == virtual_size


def test_qemu_img_malicious_files_are_refused(tmp_path: Path) -> None:
    base = make_disk(tmp_path / "base.qcow2", "qcow2")
    backed = make_disk(
        tmp_path / "backed.qcow2", "qcow2", "64M", f"backing_file={base}", "backing_fmt=qcow2"
    )
    with pytest.raises(InvalidInput, match="backing file"):
        inspect(header_view(backed), "qcow2")
    external = make_disk(
        tmp_path / "external.qcow2", "qcow2", "64M", f"data_file={tmp_path / 'data.raw'}"
    )
    with pytest.raises(InvalidInput, match="external data file"):
        inspect(header_view(external), "qcow2")
    flat = make_disk(tmp_path / "flat.vmdk", "vmdk", "1M", "subformat=monolithicFlat")
    with pytest.raises(InvalidInput, match="descriptor file"):
        inspect(header_view(flat), "vmdk")
    with pytest.raises(InvalidInput, match="disk_format is raw but the data is a qcow2"):
        inspect(header_view(base), "raw")
