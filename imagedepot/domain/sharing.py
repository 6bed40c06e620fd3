"""Who may see a VM image besides its owner: Glance's visibilities and image members.

`private` images are the owner's alone; `shared` ones also go to the projects the owner adds
as members (listed by default once the member accepted, readable by id at any status);
`community` images are readable by every project and listed when asked for; `public` ones are
listed for everyone, so only the operator may publish one (Glance's `publicize_image` policy
is admin-only too). Only the owner changes an image or its member list; only a member sets its
own status. The rules are here so that every dialect and the store agree on them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from imagedepot.domain.errors import Forbidden, InvalidInput
from imagedepot.domain.vmimages import Visibility, VmImage

MEMBERS_MAX = 128
"""Members per image (Glance's default `image_member_quota`)."""
MEMBER_ID_MAX = 255


class MemberStatus(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


@dataclass
class ImageMember:
    image_id: str
    member_id: str
    status: MemberStatus
    created_at: datetime
    updated_at: datetime

    @classmethod
    def invite(cls, image: VmImage, member_id: object, now: datetime) -> ImageMember:
        if image.visibility is not Visibility.SHARED:
            raise Forbidden(
                f"only shared images have members; image {image.id} is {image.visibility}"
            )
        if not isinstance(member_id, str) or not 1 <= len(member_id) <= MEMBER_ID_MAX:
            raise InvalidInput(
                f"member must be a project id of 1-{MEMBER_ID_MAX} characters", field="member"
            )
        if member_id == image.project_id:
            raise InvalidInput("the owner of an image cannot be its member", field="member")
        return cls(image.id, member_id, MemberStatus.PENDING, now, now)

    def set_status(self, status: object, now: datetime) -> None:
        allowed = ", ".join(member.value for member in MemberStatus)
        if not isinstance(status, str) or status not in allowed.split(", "):
            raise InvalidInput(f"status must be one of {allowed}; got {status!r}", field="status")
        self.status = MemberStatus(status)
        self.updated_at = now


def check_visibility_change(before: Visibility | None, after: Visibility, operator: bool) -> None:
    """Publishing an image to every project is the operator's call."""
    if after is Visibility.PUBLIC and before is not Visibility.PUBLIC and not operator:
        raise Forbidden(
            "only the operator may make an image public (Glance's publicize_image policy); "
            "use visibility community or shared"
        )
