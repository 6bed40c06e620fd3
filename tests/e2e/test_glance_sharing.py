"""Glance image sharing end to end against a real `imagedepot serve`: visibilities (private,
shared with members, community, public by the operator only) and the member API, over plain
HTTP (statuses, error shapes, who sees what) and through openstacksdk."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import httpx
import openstack
import pytest

from tests.support.glance import PATCH, assert_error, create, patch, upload
from tests.support.service import ADMIN_TOKEN, Service


def listed_ids(client: httpx.Client, **params: str) -> set[str]:
    response = client.get("/v2/images", params=params)
    assert response.status_code == 200, response.text
    return {image["id"] for image in response.json()["images"]}


def set_visibility(client: httpx.Client, image_id: str, visibility: str) -> httpx.Response:
    return patch(client, image_id, [{"op": "replace", "path": "/visibility", "value": visibility}])


def test_members_see_a_shared_image_once_they_accept_and_never_change_it(
    service: Service,
) -> None:
    data = os.urandom(300_000)
    with (
        service.client(service.credential("share-owner")) as owner,
        service.client(service.credential("share-friend")) as friend,
        service.client(service.credential("share-stranger")) as stranger,
        service.client(service.credential("share-friend", "reader")) as friend_reader,
    ):
        image = create(owner, name="golden", visibility="shared")
        assert upload(owner, image["id"], data).status_code == 204
        mine = create(friend, name="friend-own")
        friend_id = mine["owner"]
        image_id = image["id"]

        # Not a member yet: the image does not exist for them.
        assert_error(friend.get(f"/v2/images/{image_id}"), 404)
        assert_error(friend.get(f"/v2/images/{image_id}/members"), 404)

        added = owner.post(f"/v2/images/{image_id}/members", json={"member": friend_id})
        assert added.status_code == 200, added.text
        assert added.json()["status"] == "pending"
        assert added.json()["member_id"] == friend_id
        assert added.json()["schema"] == "/v2/schemas/member"
        assert_error(owner.post(f"/v2/images/{image_id}/members", json={"member": friend_id}), 409)
        assert_error(owner.post(f"/v2/images/{image_id}/members", json={"nobody": 1}), 400)

        # Pending: readable by id, not in the default list; listed when asked for.
        assert friend.get(f"/v2/images/{image_id}").json()["name"] == "golden"
        assert image_id not in listed_ids(friend)
        assert image_id in listed_ids(friend, member_status="pending", visibility="shared")
        # The owner cannot accept for them; a stranger learns nothing.
        assert_error(
            owner.put(f"/v2/images/{image_id}/members/{friend_id}", json={"status": "accepted"}),
            403,
        )
        assert_error(stranger.get(f"/v2/images/{image_id}"), 404)
        assert image_id not in listed_ids(stranger, visibility="all")
        assert_error(
            friend_reader.put(
                f"/v2/images/{image_id}/members/{friend_id}", json={"status": "accepted"}
            ),
            403,
        )

        accepted = friend.put(
            f"/v2/images/{image_id}/members/{friend_id}", json={"status": "accepted"}
        )
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["status"] == "accepted"
        assert_error(
            friend.put(f"/v2/images/{image_id}/members/{friend_id}", json={"status": "maybe"}),
            400,
            "status",
        )
        assert image_id in listed_ids(friend)
        assert {mine["id"], image_id} <= listed_ids(friend)
        assert listed_ids(friend, owner=image["owner"]) == {image_id}
        downloaded = friend.get(f"/v2/images/{image_id}/file")
        assert downloaded.status_code == 200
        assert hashlib.sha256(downloaded.content).digest() == hashlib.sha256(data).digest()

        # A member reads; only the owner changes the image or its members.
        assert_error(set_visibility(friend, image_id, "private"), 403, "owner")
        assert_error(friend.delete(f"/v2/images/{image_id}"), 403)
        assert_error(friend.post(f"/v2/images/{image_id}/members", json={"member": "someone"}), 403)
        assert [
            m["member_id"] for m in friend.get(f"/v2/images/{image_id}/members").json()["members"]
        ] == [friend_id]
        assert owner.get(f"/v2/images/{image_id}").json()["name"] == "golden"

        # Taken back: gone for the former member.
        assert owner.delete(f"/v2/images/{image_id}/members/{friend_id}").status_code == 204
        assert_error(owner.delete(f"/v2/images/{image_id}/members/{friend_id}"), 404)
        assert_error(friend.get(f"/v2/images/{image_id}"), 404)
        assert image_id not in listed_ids(friend, visibility="all", member_status="all")

        # Only shared images have members.
        private = create(owner, name="private-one", visibility="private")
        assert_error(
            owner.post(f"/v2/images/{private['id']}/members", json={"member": friend_id}), 403
        )


def test_community_images_are_read_by_all_and_public_ones_are_published_by_the_operator(
    service: Service,
) -> None:
    with (
        service.client(service.credential("pub-owner")) as owner,
        service.client(service.credential("pub-other")) as other,
        service.client(service.credential("pub-owner", "admin")) as project_admin,
    ):
        image = create(owner, name="community-base")
        assert set_visibility(owner, image["id"], "community").status_code == 200
        assert image["id"] not in listed_ids(other)
        assert image["id"] in listed_ids(other, visibility="community")
        assert image["id"] in listed_ids(other, visibility="all")
        assert other.get(f"/v2/images/{image['id']}").json()["visibility"] == "community"

        assert_error(set_visibility(owner, image["id"], "public"), 403, "operator")
        assert_error(set_visibility(project_admin, image["id"], "public"), 403, "operator")
        assert_error(other.post("/v2/images", json={"name": "x", "visibility": "public"}), 403)
        with service.client(ADMIN_TOKEN) as operator:
            published = operator.patch(
                f"/v2/images/{image['id']}",
                content=(b'[{"op": "replace", "path": "/visibility", "value": "public"}]'),
                headers={"Content-Type": PATCH, "X-Project-Id": image["owner"]},
            )
        assert published.status_code == 200, published.text
        assert image["id"] in listed_ids(other)
        assert image["id"] in listed_ids(other, visibility="public")
        assert image["id"] not in listed_ids(other, visibility="private")
        # Publishing again (or changing other fields) needs no operator once it is public.
        renamed = patch(owner, image["id"], [{"op": "replace", "path": "/name", "value": "b"}])
        assert renamed.status_code == 200, renamed.text


# openstacksdk warns about its own future changes (find_* defaults, influxdb, internals).
@pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning")
def test_openstacksdk_shares_an_image(service: Service) -> None:
    def connect(token: str) -> Any:
        return openstack.connect(
            auth_type="admin_token",
            auth={"endpoint": service.url, "token": token},
            image_endpoint_override=service.url,
        )

    owner = connect(service.credential("sdk-owner"))
    friend_token = service.credential("sdk-friend")
    friend = connect(friend_token)
    with service.client(friend_token) as http:
        friend_id = create(http, name="mine")["owner"]
    image = owner.image.create_image(
        name="sdk-shared",
        data=b"x" * 1000,
        disk_format="raw",
        container_format="bare",
        visibility="shared",
    )
    member = owner.image.add_member(image.id, member=friend_id)
    assert member.status == "pending"
    assert [m.status for m in owner.image.members(image.id)] == ["pending"]
    updated = friend.image.update_member(friend_id, image.id, status="accepted")
    assert updated.status == "accepted"
    assert image.id in {found.id for found in friend.image.images()}
    assert friend.image.get_image(image.id).name == "sdk-shared"
    owner.image.remove_member(friend_id, image.id)
    assert image.id not in {found.id for found in friend.image.images()}
