"""The image sharing rules on their own: who may be invited, member statuses, and who may
make an image public."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from imagedepot.domain.errors import Forbidden, InvalidInput
from imagedepot.domain.sharing import (
    MEMBER_ID_MAX,
    ImageMember,
    MemberStatus,
    check_visibility_change,
)
from imagedepot.domain.vmimages import Visibility, VmImage

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def shared_image() -> VmImage:
    image = VmImage.new("owner", NOW)
    image.visibility = Visibility.SHARED
    return image


def test_only_shared_images_take_members_and_never_their_owner() -> None:
    image = shared_image()
    member = ImageMember.invite(image, "friend", NOW)
    assert (member.status, member.image_id, member.member_id) == (
        MemberStatus.PENDING,
        image.id,
        "friend",
    )
    for visibility in (Visibility.PRIVATE, Visibility.COMMUNITY, Visibility.PUBLIC):
        image.visibility = visibility
        with pytest.raises(Forbidden, match="only shared images"):
            ImageMember.invite(image, "friend", NOW)
    image.visibility = Visibility.SHARED
    for bad in ("", "x" * (MEMBER_ID_MAX + 1), 7, None, "owner"):
        with pytest.raises(InvalidInput) as refused:
            ImageMember.invite(image, bad, NOW)
        assert refused.value.field == "member"


def test_member_status_takes_only_the_three_states() -> None:
    member = ImageMember.invite(shared_image(), "friend", NOW)
    later = datetime(2026, 1, 2, tzinfo=UTC)
    member.set_status("rejected", later)
    assert (member.status, member.updated_at) == (MemberStatus.REJECTED, later)
    for bad in ("ACCEPTED", "maybe", 1, None):
        with pytest.raises(InvalidInput):
            member.set_status(bad, later)
    assert member.status is MemberStatus.REJECTED


def test_only_the_operator_publishes() -> None:
    with pytest.raises(Forbidden, match="operator"):
        check_visibility_change(Visibility.SHARED, Visibility.PUBLIC, operator=False)
    with pytest.raises(Forbidden):
        check_visibility_change(None, Visibility.PUBLIC, operator=False)
    check_visibility_change(Visibility.SHARED, Visibility.PUBLIC, operator=True)
    check_visibility_change(Visibility.PUBLIC, Visibility.PUBLIC, operator=False)
    check_visibility_change(Visibility.PUBLIC, Visibility.PRIVATE, operator=False)
    check_visibility_change(None, Visibility.COMMUNITY, operator=False)
