"""Image members: the owner offers a shared image to other projects, each member accepts or
rejects it, and the owner takes it back. The visibility rules themselves are in
`domain/sharing.py`; this module runs them inside transactions.
"""

from __future__ import annotations

from imagedepot.domain.errors import Forbidden, NotFound, PayloadTooLarge
from imagedepot.domain.identity import Principal
from imagedepot.domain.sharing import MEMBERS_MAX, ImageMember
from imagedepot.ports import Clock, MetadataStore
from imagedepot.services.vmimages import owned_image


class ImageSharingService:
    def __init__(self, store: MetadataStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def add_member(self, principal: Principal, image_id: str, member_id: object) -> ImageMember:
        with self._store.transaction() as uow:
            image = owned_image(uow, principal, image_id)
            member = ImageMember.invite(image, member_id, self._clock.now())
            if len(uow.vm_images.members(image_id)) >= MEMBERS_MAX:
                raise PayloadTooLarge(
                    f"image {image_id} already has {MEMBERS_MAX} members, the most it may have"
                )
            uow.vm_images.add_member(member)
        return member

    def members(self, principal: Principal, image_id: str) -> list[ImageMember]:
        """The owner sees every member; a member sees only itself."""
        with self._store.transaction(read_only=True) as uow:
            image = uow.vm_images.get_visible(image_id, principal.project_id)
            if image is None:
                raise NotFound(f"no image with id {image_id}")
            members = uow.vm_images.members(image_id)
        if image.project_id == principal.project_id:
            return members
        return [member for member in members if member.member_id == principal.project_id]

    def member(self, principal: Principal, image_id: str, member_id: str) -> ImageMember:
        for member in self.members(principal, image_id):
            if member.member_id == member_id:
                return member
        raise NotFound(f"{member_id} is not a member of image {image_id}")

    def set_status(
        self, principal: Principal, image_id: str, member_id: str, status: object
    ) -> ImageMember:
        """Only the member answers for itself; the owner cannot accept on its behalf."""
        with self._store.transaction() as uow:
            image = uow.vm_images.get_visible(image_id, principal.project_id)
            member = uow.vm_images.member(image_id, member_id) if image else None
            if image is None or member is None:
                raise NotFound(f"{member_id} is not a member of image {image_id}")
            if member_id != principal.project_id:
                if image.project_id != principal.project_id:
                    raise NotFound(f"{member_id} is not a member of image {image_id}")
                raise Forbidden(f"only project {member_id} may set its own member status")
            member.set_status(status, self._clock.now())
            uow.vm_images.save_member(member)
        return member

    def remove_member(self, principal: Principal, image_id: str, member_id: str) -> None:
        with self._store.transaction() as uow:
            owned_image(uow, principal, image_id)
            if not uow.vm_images.remove_member(image_id, member_id):
                raise NotFound(f"{member_id} is not a member of image {image_id}")
