"""Image sharing in the store, on SQLite and PostgreSQL: which images a project reads by id
and which a Glance list shows it for each `visibility` and `member_status`, and the member
rows themselves."""

from __future__ import annotations

from datetime import timedelta

import pytest

from imagedepot.adapters.db.store import SqlMetadataStore
from imagedepot.domain.errors import Conflict
from imagedepot.domain.sharing import ImageMember, MemberStatus
from imagedepot.domain.vmimages import ImageQuery, ImageStatus, SortKey, Visibility, VmImage
from tests.support.vmimage_records import T0, add, image


def owned_by(owner: str, name: str, visibility: Visibility) -> VmImage:
    made = image(name, project_id=owner)
    made.visibility = visibility
    return made


def seen(store: SqlMetadataStore, project: str, **query: object) -> set[str | None]:
    with store.transaction(read_only=True) as uow:
        found = uow.vm_images.list(
            ImageQuery(project_id=project, include_visible=True, **query)  # type: ignore[arg-type]
        )
    return {one.name for one in found}


def test_who_sees_which_image(store: SqlMetadataStore) -> None:
    images = {
        name: owned_by("owner", name, visibility)
        for name, visibility in (
            ("private", Visibility.PRIVATE),
            ("offered", Visibility.SHARED),
            ("taken", Visibility.SHARED),
            ("declined", Visibility.SHARED),
            ("community", Visibility.COMMUNITY),
            ("public", Visibility.PUBLIC),
        )
    }
    mine = owned_by("me", "mine", Visibility.SHARED)
    gone = owned_by("owner", "gone", Visibility.PUBLIC)
    gone.status = ImageStatus.DELETED
    add(store, *images.values(), mine, gone)
    with store.transaction() as uow:
        for name, status in (
            ("offered", MemberStatus.PENDING),
            ("taken", MemberStatus.ACCEPTED),
            ("declined", MemberStatus.REJECTED),
        ):
            member = ImageMember.invite(images[name], "me", T0)
            member.status = status
            uow.vm_images.add_member(member)

    assert seen(store, "me") == {"mine", "taken", "public"}
    assert seen(store, "me", visibility="all") == {"mine", "taken", "public", "community"}
    assert seen(store, "me", visibility="shared") == {"mine", "taken"}
    assert seen(store, "me", visibility="shared", member_status="pending") == {"mine", "offered"}
    assert seen(store, "me", visibility="shared", member_status="all") == {
        "mine",
        "offered",
        "taken",
        "declined",
    }
    assert seen(store, "me", visibility="community") == {"community"}
    assert seen(store, "me", visibility="public") == {"public"}
    assert seen(store, "me", visibility="private") == set()
    assert seen(store, "me", owner="owner") == {"taken", "public"}
    assert seen(store, "stranger") == {"public"}
    assert seen(store, "owner") == set(images)
    with store.transaction(read_only=True) as uow:
        readable = {
            name
            for name, one in {**images, "gone": gone}.items()
            if uow.vm_images.get_visible(one.id, "me") is not None
        }
        assert uow.vm_images.get_visible(mine.id, "stranger") is None
        assert uow.vm_images.get_visible(mine.id, "me") is not None
        # Without include_visible (the other dialects) a project sees only its own.
        own_only = uow.vm_images.list(ImageQuery(project_id="me"))
    assert readable == {"offered", "taken", "declined", "community", "public"}
    assert [one.name for one in own_only] == ["mine"]


def test_member_rows(store: SqlMetadataStore) -> None:
    shared = owned_by("owner", "shared", Visibility.SHARED)
    add(store, shared)
    first, second = ImageMember.invite(shared, "b", T0), ImageMember.invite(shared, "a", T0)
    with store.transaction() as uow:
        uow.vm_images.add_member(first)
        uow.vm_images.add_member(second)
        with pytest.raises(Conflict):
            uow.vm_images.add_member(ImageMember.invite(shared, "b", T0))
        # The transaction is still usable after the conflict.
        assert [m.member_id for m in uow.vm_images.members(shared.id)] == ["a", "b"]
    first.set_status("accepted", T0)
    with store.transaction() as uow:
        uow.vm_images.save_member(first)
    with store.transaction() as uow:
        assert uow.vm_images.member(shared.id, "b") == first
        assert uow.vm_images.member(shared.id, "zzz") is None
        assert uow.vm_images.remove_member(shared.id, "a") is True
        assert uow.vm_images.remove_member(shared.id, "a") is False
        assert uow.vm_images.members(shared.id) == [first]


@pytest.mark.parametrize(
    "sort",
    [
        (SortKey("created_at", True),),
        (SortKey("name", False),),
        (SortKey("name", True), SortKey("created_at", False)),
        (SortKey("size", False),),
    ],
    ids=["default", "name", "mixed-directions", "size"],
)
def test_pages_merged_from_every_source_walk_each_visible_image_once(
    store: SqlMetadataStore, sort: tuple[SortKey, ...]
) -> None:
    """A list reads owned, public and shared-with images as separate sources and merges them;
    walked by marker or by offset, in any sort, it must give each visible image exactly once
    and in the order one query over all of them would."""
    made: list[VmImage] = []
    for index in range(24):
        owner = ("me", "owner", "other")[index % 3]
        visibility = (Visibility.PRIVATE, Visibility.PUBLIC, Visibility.SHARED)[index % 4 % 3]
        one = owned_by(owner, None if index % 5 == 0 else f"n{index % 6}", visibility)
        one.created_at = one.updated_at = T0 + timedelta(seconds=index // 2)
        one.size = None if index % 7 == 0 else index % 4
        made.append(one)
    add(store, *made)
    with store.transaction() as uow:
        for one in made:
            if one.visibility is Visibility.SHARED and one.project_id == "owner":
                member = ImageMember.invite(one, "me", T0)
                member.status = MemberStatus.ACCEPTED
                uow.vm_images.add_member(member)
    visible = [
        one
        for one in made
        if one.project_id == "me"
        or one.visibility is Visibility.PUBLIC
        or (one.visibility is Visibility.SHARED and one.project_id == "owner")
    ]
    keys = [*sort, SortKey("id", sort[-1].descending)]
    expected = list(visible)
    for key in reversed(keys):  # a stable sort per key, last key first
        expected.sort(key=lambda one, k=key.key: _sort_value(one, k), reverse=key.descending)

    by_marker: list[str] = []
    by_offset: list[str] = []
    marker: str | None = None
    while True:
        with store.transaction(read_only=True) as uow:
            query = ImageQuery("me", include_visible=True, sort=sort, limit=5, marker=marker)
            page = uow.vm_images.list(query)
            by_offset += [
                one.id
                for one in uow.vm_images.list(
                    ImageQuery(
                        "me", include_visible=True, sort=sort, limit=5, offset=len(by_offset)
                    )
                )
            ]
        if not page:
            break
        by_marker += [one.id for one in page]
        marker = page[-1].id
    assert by_marker == [one.id for one in expected]
    assert by_offset == by_marker
    with store.transaction(read_only=True) as uow:
        assert uow.vm_images.count(ImageQuery("me", include_visible=True)) == len(visible)


def _sort_value(one: VmImage, key: str) -> object:
    value = getattr(one, key)
    if key == "name":
        return value or ""
    if key == "size":
        return -1 if value is None else value
    return value
