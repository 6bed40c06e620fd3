"""The VmImage aggregate's rules: Glance's status machine and which attributes a caller may set."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from imagedepot.domain.errors import Conflict, Forbidden, InvalidInput
from imagedepot.domain.vmimages import ImageStatus, ImageType, VmImage, apply_create

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def queued(**attributes: object) -> VmImage:
    image = VmImage.new("p1", T0)
    apply_create(image, {"disk_format": "raw", "container_format": "bare", **attributes})
    return image


def activate(image: VmImage) -> None:
    image.start_upload(T0)
    image.finish_upload(
        size=1, checksum="c", os_hash_value="h", blob_digest="d", virtual_size=1, now=T0
    )


def test_upload_moves_queued_to_saving_to_active_once() -> None:
    image = queued()
    image.start_upload(T0)
    assert image.status is ImageStatus.SAVING
    with pytest.raises(Conflict):
        image.start_upload(T0)
    image.abandon_upload(T0)
    assert image.status is ImageStatus.QUEUED
    activate(image)
    assert image.status is ImageStatus.ACTIVE
    assert image.os_hash_algo == "sha512"
    with pytest.raises(Conflict):
        image.start_upload(T0)


def test_staged_data_waits_for_its_import() -> None:
    image = queued()
    with pytest.raises(Conflict, match="stage"):
        image.import_staged(T0)
    image.start_upload(T0, "host/1/abc", stage=True)
    assert image.status is ImageStatus.UPLOADING
    image.abandon_upload(T0)  # staging cut short: back to queued
    assert (image.status, image.upload_holder) == (ImageStatus.QUEUED, None)
    image.start_upload(T0, "host/1/abc", stage=True)
    image.finish_upload(
        size=1, checksum="c", os_hash_value="h", blob_digest="d", virtual_size=1, now=T0
    )
    assert (image.status, image.upload_holder) == (ImageStatus.UPLOADING, None)
    image.abandon_upload(T0)  # staged data is kept for the import
    assert image.status is ImageStatus.UPLOADING
    image.import_staged(T0)
    assert image.status is ImageStatus.ACTIVE
    with pytest.raises(Conflict):
        image.import_staged(T0)


def test_upload_needs_both_formats() -> None:
    image = VmImage.new("p1", T0)
    with pytest.raises(InvalidInput) as raised:
        image.start_upload(T0)
    assert raised.value.field == "disk_format"


def test_deactivate_and_reactivate_only_from_the_right_states() -> None:
    image = queued()
    with pytest.raises(Conflict):
        image.deactivate(T0)
    activate(image)
    image.deactivate(T0)
    image.deactivate(T0)
    with pytest.raises(Forbidden):
        image.check_downloadable()
    image.reactivate(T0)
    assert image.status is ImageStatus.ACTIVE


def test_protected_images_cannot_be_deleted() -> None:
    image = queued(protected=True)
    with pytest.raises(Forbidden):
        image.mark_deleted(T0)
    image.set_attribute("protected", False)
    image.mark_deleted(T0)
    assert image.status is ImageStatus.DELETED
    assert image.deleted_at == T0


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("status", "active", Forbidden),
        ("size", 1, Forbidden),
        ("owner", "x", Forbidden),
        ("visibility", "everyone", InvalidInput),
        ("min_disk", -1, InvalidInput),
        ("min_ram", 2**63, InvalidInput),
        ("x_note", "\udfff", InvalidInput),
        ("protected", "yes", InvalidInput),
        ("tags", "a", InvalidInput),
        ("hw_disk_bus", 1, InvalidInput),
        ("name", "n" * 256, InvalidInput),
    ],
)
def test_bad_attributes_name_themselves(key: str, value: object, error: type[Exception]) -> None:
    image = queued()
    with pytest.raises(error) as raised:
        image.set_attribute(key, value)
    assert key in str(raised.value)


def test_formats_are_fixed_once_data_is_uploaded() -> None:
    image = queued()
    activate(image)
    with pytest.raises(Forbidden):
        image.set_attribute("disk_format", "qcow2")
    image.set_attribute("disk_format", "raw")


def test_image_type_property_makes_a_snapshot() -> None:
    image = queued(image_type="snapshot")
    assert image.image_type is ImageType.SNAPSHOT
    image.remove_attribute("image_type")
    assert image.image_type is ImageType.IMAGE
    with pytest.raises(Conflict):
        image.remove_attribute("image_type")


def test_client_ids_must_be_uuids() -> None:
    assert VmImage.new("p", T0, image_id="0F0E0D0C0B0A49098807060504030201").id == (
        "0f0e0d0c-0b0a-4909-8807-060504030201"
    )
    with pytest.raises(InvalidInput):
        VmImage.new("p", T0, image_id="nope")
