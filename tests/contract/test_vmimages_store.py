"""The VM image repository contract, on SQLite and on a real PostgreSQL 15: round trips,
project isolation, optimistic saves, and the list's filters, sorts and keyset pagination."""

from __future__ import annotations

from datetime import timedelta

import pytest

from imagedepot.adapters.db.store import SqlMetadataStore
from imagedepot.domain.errors import Conflict, InvalidInput
from imagedepot.domain.vmimages import (
    ImageJob,
    ImageQuery,
    ImageStatus,
    ImageType,
    JobType,
    SortKey,
    TimeFilter,
    Visibility,
    VmImage,
)
from tests.support.vmimage_records import T0, add, image


def listed(store: SqlMetadataStore, **query: object) -> list[str | None]:
    with store.transaction(read_only=True) as uow:
        found = uow.vm_images.list(ImageQuery(project_id="p1", **query))  # type: ignore[arg-type]
    return [one.name for one in found]


def test_add_and_get_round_trip_every_field(store: SqlMetadataStore) -> None:
    original = VmImage.new("p1", T0, image_id="0f0e0d0c-0b0a-4909-8807-060504030201", region="r1")
    original.name = "ubuntu"
    original.visibility = Visibility.PRIVATE
    original.protected = True
    original.os_hidden = True
    original.disk_format = "qcow2"
    original.container_format = "bare"
    original.min_disk, original.min_ram = 8, 512
    original.tags = ["lts", "amd64"]
    original.set_property("image_type", "snapshot")
    original.set_property("os_distro", "ubuntu")
    original.description = "base"
    original.status = ImageStatus.SAVING
    original.finish_upload(
        size=10,
        checksum="a" * 32,
        os_hash_value="b" * 128,
        blob_digest="sha256:" + "c" * 64,
        virtual_size=1 << 30,
        now=T0 + timedelta(seconds=1),
    )
    add(store, original)
    with store.transaction(read_only=True) as uow:
        loaded = uow.vm_images.get(original.id)
    assert loaded is not None
    assert loaded.image_type is ImageType.SNAPSHOT
    assert sorted(loaded.tags) == sorted(original.tags)
    loaded.tags = original.tags
    assert loaded == original
    assert loaded.updated_at.tzinfo is not None


def test_a_taken_id_is_a_conflict(store: SqlMetadataStore) -> None:
    first = image("a")
    add(store, first)
    again = image("b")
    again.id = first.id
    with pytest.raises(Conflict):
        add(store, again)


def test_get_is_scoped_to_the_project_and_hides_deleted(store: SqlMetadataStore) -> None:
    mine, gone = image("mine"), image("gone")
    gone.mark_deleted(T0)
    add(store, mine, gone)
    with store.transaction(read_only=True) as uow:
        assert uow.vm_images.get(mine.id, "p1") is not None
        assert uow.vm_images.get(mine.id, "p2") is None
        assert uow.vm_images.get(gone.id, "p1") is None
        deleted = uow.vm_images.get(gone.id, "p1", include_deleted=True)
        assert deleted is not None
        assert deleted.status is ImageStatus.DELETED


def test_save_is_optimistic_and_replaces_tags_and_properties(store: SqlMetadataStore) -> None:
    one = image("one", tags=("x", "y"), properties={"k": "v"})
    add(store, one)
    read_version = one.version
    one.tags = ["z"]
    one.properties = {"k2": "v2"}
    one.touch(T0)
    with store.transaction() as uow:
        assert uow.vm_images.save(one, read_version)
        assert not uow.vm_images.save(one, read_version)
    with store.transaction(read_only=True) as uow:
        loaded = uow.vm_images.get(one.id)
    assert loaded is not None
    assert loaded.tags == ["z"]
    assert loaded.properties == {"k2": "v2"}
    assert loaded.version == read_version + 1


def test_list_isolates_projects_and_sorts_newest_first_by_default(
    store: SqlMetadataStore,
) -> None:
    add(
        store,
        image("old", at=T0),
        image("new", at=T0 + timedelta(minutes=1)),
        image("theirs", project_id="p2"),
    )
    assert listed(store) == ["new", "old"]


def test_list_filters(store: SqlMetadataStore) -> None:
    small = image("small", size=10, tags=("a", "b"), properties={"os_distro": "debian"})
    big = image("big", size=1000, tags=("a",), at=T0 + timedelta(minutes=1))
    empty = image("empty", at=T0 + timedelta(minutes=2))
    hidden = image("hidden", at=T0 + timedelta(minutes=3))
    hidden.os_hidden = True
    snap = image("snap", at=T0 + timedelta(minutes=4), properties={"image_type": "snapshot"})
    add(store, small, big, empty, hidden, snap)
    assert listed(store, names=("small", "big")) == ["big", "small"]
    assert listed(store, tags=("a",)) == ["big", "small"]
    assert listed(store, tags=("a", "b")) == ["small"]
    assert listed(store, properties=(("os_distro", "debian"),)) == ["small"]
    assert listed(store, size_min=11) == ["big"]
    assert listed(store, size_max=999) == ["small"]
    assert "hidden" not in listed(store)
    assert "hidden" in listed(store, os_hidden=None)
    assert listed(store, os_hidden=True) == ["hidden"]
    assert listed(store, image_type=ImageType.SNAPSHOT) == ["snap"]
    assert listed(store, times=(TimeFilter("created_at", "lt", T0 + timedelta(seconds=30)),)) == [
        "small"
    ]
    assert listed(store, statuses=("active",)) == []
    assert listed(store, statuses=("queued",), limit=2) == ["snap", "empty"]


def test_changes_since_includes_deleted_images(store: SqlMetadataStore) -> None:
    kept, gone = image("kept"), image("gone")
    gone.mark_deleted(T0 + timedelta(hours=1))
    add(store, kept, gone)
    assert listed(store) == ["kept"]
    assert listed(store, changes_since=T0 + timedelta(minutes=30)) == ["gone"]
    assert sorted(name or "" for name in listed(store, changes_since=T0)) == ["gone", "kept"]


def test_sorts_with_nulls_and_mixed_directions_paginate_exactly(store: SqlMetadataStore) -> None:
    names = ["b", None, "a", "c", "a", None, "b"]
    images = [
        image(name, size=None if index % 3 == 0 else index, at=T0 + timedelta(seconds=index))
        for index, name in enumerate(names)
    ]
    add(store, *images)
    sort = (SortKey("name", False), SortKey("size", True))
    everything = listed(store, sort=sort, limit=100)
    assert everything == [None, None, "a", "a", "b", "b", "c"]
    with store.transaction(read_only=True) as uow:
        pages: list[str] = []
        marker = None
        while True:
            page = uow.vm_images.list(ImageQuery("p1", sort=sort, limit=2, marker=marker))
            if not page:
                break
            pages.extend(one.id for one in page)
            marker = page[-1].id
        full = [one.id for one in uow.vm_images.list(ImageQuery("p1", sort=sort, limit=100))]
    assert pages == full
    assert len(set(pages)) == len(images)


def test_an_unknown_or_foreign_marker_is_invalid(store: SqlMetadataStore) -> None:
    theirs = image("theirs", project_id="p2")
    add(store, theirs)
    for marker in ("no-such-image", theirs.id):
        with store.transaction(read_only=True) as uow, pytest.raises(InvalidInput) as raised:
            uow.vm_images.list(ImageQuery("p1", marker=marker))
        assert raised.value.field == "marker"


def test_region_filter_offset_and_count(store: SqlMetadataStore) -> None:
    images = [image(f"i{index}", at=T0 + timedelta(seconds=index)) for index in range(5)]
    for index, one in enumerate(images):
        one.region = "r1" if index % 2 == 0 else "r2"
    add(store, *images)
    assert listed(store, region="r1") == ["i4", "i2", "i0"]
    assert listed(store, region="r1", offset=1, limit=1) == ["i2"]
    with store.transaction(read_only=True) as uow:
        assert uow.vm_images.count(ImageQuery("p1", region="r1", limit=1)) == 3
        assert uow.vm_images.count(ImageQuery("p2")) == 0


def test_jobs_round_trip_in_the_asked_order_and_per_project(store: SqlMetadataStore) -> None:
    first = ImageJob.finished("p1", "r1", JobType.CREATE, "a" * 8, T0)
    second = ImageJob.finished("p1", "r1", JobType.DELETE, "b" * 8, T0)
    theirs = ImageJob.finished("p2", "r1", JobType.IMPORT, "c" * 8, T0)
    with store.transaction() as uow:
        for job in (first, second, theirs):
            uow.vm_images.add_job(job)
    with store.transaction(read_only=True) as uow:
        found = uow.vm_images.jobs("p1", [second.id, first.id, theirs.id, "unknown"])
    assert found == [second, first]


def test_uploads_in_flight_are_found_by_their_holder(store: SqlMetadataStore) -> None:
    saving, other, idle = image("saving"), image("other"), image("idle")
    for one in (saving, other, idle):
        one.disk_format, one.container_format = "raw", "bare"
    saving.start_upload(T0, "host/1/dead")
    other.start_upload(T0, "host/2/alive")
    add(store, saving, other, idle)
    with store.transaction(read_only=True) as uow:
        assert sorted(uow.vm_images.upload_holders()) == ["host/1/dead", "host/2/alive"]
        found = uow.vm_images.saving_held_by(["host/1/dead"])
        assert [one.id for one in found] == [saving.id]
        assert found[0].upload_holder == "host/1/dead"
        assert uow.vm_images.saving_held_by([]) == []
    with store.transaction() as uow:
        version = found[0].version
        found[0].abandon_upload(T0 + timedelta(seconds=1))
        assert uow.vm_images.save(found[0], version)
    with store.transaction(read_only=True) as uow:
        assert uow.vm_images.upload_holders() == ["host/2/alive"]
        back = uow.vm_images.get(saving.id, "p1")
        assert back is not None
        assert back.status.value == "queued"
        assert back.upload_holder is None
