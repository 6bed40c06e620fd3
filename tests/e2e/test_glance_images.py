"""VM images end to end over the Glance v2 dialect: a real `imagedepot serve`, spoken to with
plain HTTP (every status and error shape) and with openstacksdk, the client users script with."""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path
from typing import Any

import openstack
import pytest

from tests.support.glance import assert_error, create, patch, project_client, upload
from tests.support.service import Service

_projects = itertools.count()


def test_versions_and_schemas(service: Service) -> None:
    with service.client(None) as client:
        root = client.get("/")
        assert root.status_code == 300
        current = root.json()["versions"][0]
        assert current["status"] == "CURRENT"
        assert current["links"][0]["href"] == f"{service.url}/v2/"
        assert client.get("/versions").json() == root.json()
        image_schema = client.get("/v2/schemas/image").json()
        assert image_schema["name"] == "image"
        assert {"id", "checksum", "os_hash_value", "tags"} <= set(image_schema["properties"])
        assert client.get("/v2/schemas/images").json()["properties"]["images"]["items"]["name"] == (
            "image"
        )


def test_upload_download_and_the_status_machine(service: Service) -> None:
    data = os.urandom(1_500_000)
    with project_client(service) as client:
        image = create(client, name="disk", id="7c4a1f2e-0a5b-4b44-9d8e-3f1d2c3b4a59")
        assert image["id"] == "7c4a1f2e-0a5b-4b44-9d8e-3f1d2c3b4a59"
        assert image["status"] == "queued"
        image_id = image["id"]
        assert client.get(f"/v2/images/{image_id}/file").status_code == 204

        response = upload(client, image_id, data)
        assert response.status_code == 204, response.text
        shown = client.get(f"/v2/images/{image_id}").json()
        assert shown["status"] == "active"
        assert shown["size"] == len(data)
        assert shown["checksum"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
        assert shown["os_hash_algo"] == "sha512"
        assert shown["os_hash_value"] == hashlib.sha512(data).hexdigest()
        sha256 = hashlib.sha256(data).hexdigest()
        assert (service.blob_dir() / sha256[:2] / sha256).read_bytes() == data
        assert_error(upload(client, image_id, b"again"), 409)

        downloaded = client.get(f"/v2/images/{image_id}/file")
        assert downloaded.status_code == 200
        assert downloaded.headers["content-md5"] == shown["checksum"]
        assert downloaded.content == data
        head = client.head(f"/v2/images/{image_id}/file")
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(data))
        ranged = client.get(f"/v2/images/{image_id}/file", headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206
        assert ranged.content == data[10:20]
        beyond = client.get(
            f"/v2/images/{image_id}/file", headers={"Range": f"bytes={len(data) + 5}-"}
        )
        assert beyond.status_code == 416

        assert client.post(f"/v2/images/{image_id}/actions/deactivate").status_code == 204
        assert client.get(f"/v2/images/{image_id}").json()["status"] == "deactivated"
        assert_error(client.get(f"/v2/images/{image_id}/file"), 403)
        assert client.post(f"/v2/images/{image_id}/actions/reactivate").status_code == 204
        assert client.get(f"/v2/images/{image_id}/file").status_code == 200

        assert patch(client, image_id, [{"op": "replace", "path": "/protected", "value": True}])
        assert_error(client.delete(f"/v2/images/{image_id}"), 403, "protected")
        patch(client, image_id, [{"op": "replace", "path": "/protected", "value": False}])
        assert client.delete(f"/v2/images/{image_id}").status_code == 204
        assert_error(client.get(f"/v2/images/{image_id}"), 404)
        assert_error(client.delete(f"/v2/images/{image_id}"), 404)


def test_a_bad_upload_leaves_the_image_queued_and_no_blob(service: Service) -> None:
    data = os.urandom(200_000)
    with project_client(service) as client:
        image_id = create(client, name="short")["id"]
        response = client.put(
            f"/v2/images/{image_id}/file",
            content=data,
            headers={
                "Content-Type": "application/octet-stream",
                "X-OpenStack-Image-Size": str(len(data) + 1),
            },
        )
        assert_error(response, 400, "X-OpenStack-Image-Size")
        assert client.get(f"/v2/images/{image_id}").json()["status"] == "queued"
        sha256 = hashlib.sha256(data).hexdigest()
        assert not (service.blob_dir() / sha256[:2] / sha256).exists()
        assert list((service.data_dir / "blobs" / "tmp").iterdir()) == []
        assert upload(client, image_id, data).status_code == 204


def test_create_and_patch_refuse_bad_input_and_change_nothing(service: Service) -> None:
    with project_client(service) as client:
        assert_error(client.post("/v2/images", json={"disk_format": "floppy"}), 400, "disk_format")
        assert_error(client.post("/v2/images", json={"checksum": "x"}), 403, "checksum")
        assert_error(client.post("/v2/images", json={"owner": "x"}), 403, "owner")
        assert_error(client.post("/v2/images", json={"min_ram": -1}), 400, "min_ram")
        assert_error(client.post("/v2/images", json={"os_distro": 7}), 400, "os_distro")
        assert_error(client.post("/v2/images", json={"id": "not-a-uuid"}), 400, "id")
        assert client.get("/v2/images").json()["images"] == []

        image = create(client, name="keep", os_distro="debian")
        before = client.get(f"/v2/images/{image['id']}").json()
        operations = [
            {"op": "replace", "path": "/name", "value": "changed"},
            {"op": "replace", "path": "/visibility", "value": "galactic"},
        ]
        assert_error(patch(client, image["id"], operations), 400, "visibility")
        assert_error(patch(client, image["id"], [{"op": "add", "path": "/size", "value": 1}]), 403)
        wrong_type = client.patch(f"/v2/images/{image['id']}", json=[])
        assert_error(wrong_type, 415)
        assert client.get(f"/v2/images/{image['id']}").json() == before

        changed = patch(
            client,
            image["id"],
            [
                {"op": "replace", "path": "/name", "value": "renamed"},
                {"op": "add", "path": "/hw_disk_bus", "value": "scsi"},
                {"op": "remove", "path": "/os_distro"},
                {"op": "add", "path": "/tags", "value": ["a", "b"]},
            ],
        )
        assert changed.status_code == 200, changed.text
        body = changed.json()
        assert body["name"] == "renamed"
        assert body["hw_disk_bus"] == "scsi"
        assert "os_distro" not in body
        assert body["tags"] == ["a", "b"]
        old_form = client.patch(
            f"/v2/images/{image['id']}",
            json=[{"replace": "/name", "value": "v20"}],
            headers={"Content-Type": "application/openstack-images-v2.0-json-patch"},
        )
        assert old_form.json()["name"] == "v20"

        assert client.put(f"/v2/images/{image['id']}/tags/c").status_code == 204
        assert client.delete(f"/v2/images/{image['id']}/tags/a").status_code == 204
        assert_error(client.delete(f"/v2/images/{image['id']}/tags/zzz"), 404)
        assert sorted(client.get(f"/v2/images/{image['id']}").json()["tags"]) == ["b", "c"]


def test_another_projects_image_is_exactly_as_missing(service: Service) -> None:
    with project_client(service) as owner, project_client(service) as stranger:
        image_id = create(owner, name="private")["id"]
        missing = "00000000-0000-4000-8000-000000000000"
        for target in (image_id, missing):
            for response in (
                stranger.get(f"/v2/images/{target}"),
                stranger.delete(f"/v2/images/{target}"),
                stranger.get(f"/v2/images/{target}/file"),
                upload(stranger, target, b"x"),
                patch(stranger, target, [{"op": "replace", "path": "/name", "value": "x"}]),
            ):
                assert_error(response, 404)
                assert target in response.json()["error"]["message"]
        assert stranger.get("/v2/images").json()["images"] == []
        assert owner.get(f"/v2/images/{image_id}").json()["name"] == "private"


def test_a_reader_may_list_and_download_but_not_create(service: Service) -> None:
    with project_client(service, "reader") as reader:
        assert reader.get("/v2/images").status_code == 200
        assert_error(reader.post("/v2/images", json={"name": "x"}), 403)


def test_listing_filters_sorts_and_pages(service: Service) -> None:
    with project_client(service) as client:
        made = {
            name: create(client, name=name, **extra)
            for name, extra in [
                ("charlie", {"tags": ["x"]}),
                ("alpha", {"tags": ["x", "y"], "os_distro": "debian"}),
                ("bravo", {"image_type": "snapshot", "instance_uuid": "i-1"}),
                ("delta", {"visibility": "private"}),
            ]
        }
        upload(client, made["alpha"]["id"], b"a" * 100)
        upload(client, made["bravo"]["id"], b"b" * 5000)

        def names(**params: Any) -> list[str]:
            response = client.get("/v2/images", params=params)
            assert response.status_code == 200, response.text
            return [image["name"] for image in response.json()["images"]]

        assert names() == ["delta", "bravo", "alpha", "charlie"]
        assert names(sort_key="name", sort_dir="asc") == ["alpha", "bravo", "charlie", "delta"]
        assert names(**{"sort-key": "name", "sort-dir": "desc"})[0] == "delta"
        assert names(sort="status:asc,name:desc") == ["bravo", "alpha", "delta", "charlie"]
        assert names(tag="x", sort_key="name", sort_dir="asc") == ["alpha", "charlie"]
        assert names(os_distro="debian") == ["alpha"]
        assert names(status="active", sort_key="name", sort_dir="asc") == ["alpha", "bravo"]
        assert names(name="in:alpha,delta", sort_key="name", sort_dir="asc") == ["alpha", "delta"]
        assert names(size_min="1000") == ["bravo"]
        assert names(visibility="private") == ["delta"]
        assert names(type="snapshot") == ["bravo"]
        assert names(created_at="gte:2000-01-01T00:00:00Z") == names()

        pages: list[str] = []
        url: str | None = "/v2/images?limit=2&sort_key=name&sort_dir=asc"
        while url:
            body = client.get(url).json()
            assert body["schema"] == "/v2/schemas/images"
            assert body["first"].startswith("/v2/images?limit=2")
            pages += [image["name"] for image in body["images"]]
            url = body.get("next")
        assert pages == ["alpha", "bravo", "charlie", "delta"]

        assert_error(client.get("/v2/images", params={"limit": "many"}), 400, "limit")
        assert_error(client.get("/v2/images", params={"marker": "nope"}), 400, "marker")
        assert_error(client.get("/v2/images", params={"sort_key": "colour"}), 400, "colour")
        assert_error(
            client.get("/v2/images", params={"sort": "name:asc", "sort_key": "name"}), 400, "sort"
        )
        assert_error(client.get("/v2/images", params={"created_at": "soon:x"}), 400, "created_at")


def test_the_seeds_snapshot_list(service: Service) -> None:
    with project_client(service) as client:
        kept = create(client, name="fakeimage7")
        gone = create(client, name="fakeimage6", image_type="snapshot")
        response = client.get("/v2/images?limit=20&sort_key=name&sort_dir=asc")
        assert response.status_code == 200
        items = response.json()["images"]
        assert [item["name"] for item in items] == ["fakeimage6", "fakeimage7"]
        for item in items:
            assert [link["rel"] for link in item["links"]] == ["self", "bookmark", "alternate"]
            assert item["links"][0]["href"] == f"{service.url}/v2/images/{item['id']}"
            assert item["links"][2]["type"] == "application/vnd.openstack.image"
        dashed = client.get("/v2/images?limit=20&sort-key=name&sort-dir=desc").json()
        assert [item["name"] for item in dashed["images"]] == ["fakeimage7", "fakeimage6"]
        assert [i["name"] for i in client.get("/v2/images?type=snapshot").json()["images"]] == [
            "fakeimage6"
        ]
        since = client.get(f"/v2/images/{kept['id']}").json()["created_at"]
        assert client.delete(f"/v2/images/{gone['id']}").status_code == 204
        changed = client.get("/v2/images", params={"changes-since": since}).json()["images"]
        statuses = {item["name"]: item["status"] for item in changed}
        assert statuses == {"fakeimage7": "queued", "fakeimage6": "deleted"}
        assert [i["name"] for i in client.get("/v2/images").json()["images"]] == ["fakeimage7"]


# openstacksdk warns about its own future changes (find_* defaults, influxdb, internals).
@pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning")
def test_openstacksdk_creates_lists_downloads_and_deletes(service: Service, tmp_path: Path) -> None:
    token = service.credential(f"glance-sdk-{next(_projects)}")
    connection = openstack.connect(
        auth_type="admin_token",
        auth={"endpoint": service.url, "token": token},
        image_endpoint_override=service.url,
    )
    data = os.urandom(700_000)
    disk = tmp_path / "disk.raw"
    disk.write_bytes(data)
    # With `filename=` openstacksdk leaves the file open; hand it an open file instead.
    with disk.open("rb") as handle:
        created = connection.image.create_image(
            name="ubuntu-24.04", data=handle, disk_format="raw", container_format="bare"
        )
    with disk.open("rb") as handle:
        other = connection.image.create_image(
            name="alpine", data=handle, disk_format="raw", container_format="bare"
        )
    image = connection.image.get_image(created.id)
    assert image.status == "active"
    assert image.size == len(data)
    assert image.checksum == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert [i.name for i in connection.image.images(sort_key="name", sort_dir="asc")] == [
        "alpine",
        "ubuntu-24.04",
    ]
    assert [i.id for i in connection.image.images(name="alpine")] == [other.id]
    assert [i.name for i in connection.image.images(limit=1, sort_key="name")] == [
        "ubuntu-24.04",
        "alpine",
    ]
    assert connection.image.download_image(image).content == data
    connection.image.delete_image(image)
    connection.image.delete_image(other)
    assert list(connection.image.images()) == []
    connection.close()


def test_malicious_disk_images_are_refused_and_the_image_stays_queued(service: Service) -> None:
    from tests.support.disks import qcow2

    with project_client(service) as client:
        for data, declared, mentions in [
            (qcow2(backing=b"/etc/shadow"), "qcow2", "backing file"),
            (qcow2(incompatible=1 << 2), "qcow2", "external data file"),
            (qcow2(), "raw", "qcow2"),
        ]:
            image_id = create(client, name="evil", disk_format=declared)["id"]
            assert_error(upload(client, image_id, data), 400, mentions)
            assert client.get(f"/v2/images/{image_id}").json()["status"] == "queued"
        good = create(client, name="good", disk_format="qcow2")["id"]
        assert upload(client, good, qcow2(size=3 << 30)).status_code == 204
        assert client.get(f"/v2/images/{good}").json()["virtual_size"] == 3 << 30


def test_the_cli_uploads_a_snapshot_and_lists_it(service: Service, tmp_path: Path) -> None:
    from tests.support.disks import qcow2

    token = service.credential(f"glance-cli-{next(_projects)}")
    disk = tmp_path / "server.qcow2"
    disk.write_bytes(qcow2(size=2 << 30))
    common = ("--server", service.url, "--token", token)
    made = service.cli("images", "snapshot", *common, "--from", str(disk), "--name", "web-snap")
    image_id, name, status = made.stdout.split()[:3]
    assert (name, status) == ("web-snap", "active")
    listed = service.cli("images", "list", *common, "--type", "snapshot", "--json")
    import json

    [item] = json.loads(listed.stdout)
    assert item["id"] == image_id
    assert item["image_type"] == "snapshot"
    assert item["disk_format"] == "qcow2"
    assert item["virtual_size"] == 2 << 30
    service.cli("images", "delete", *common, image_id)
    assert json.loads(service.cli("images", "list", *common, "--json").stdout) == []


@pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning")
def test_openstacksdk_uploads_real_qcow2_and_vmdk_files(service: Service, tmp_path: Path) -> None:
    from tests.support.disks import make_disk

    token = service.credential(f"glance-sdk-{next(_projects)}")
    connection = openstack.connect(
        auth_type="admin_token",
        auth={"endpoint": service.url, "token": token},
        image_endpoint_override=service.url,
    )
    for fmt, declared in (("qcow2", "qcow2"), ("vmdk", "vmdk")):
        disk = make_disk(tmp_path / f"disk.{fmt}", fmt, "1G")
        with disk.open("rb") as handle:
            created = connection.image.create_image(
                name=f"real-{fmt}", data=handle, disk_format=declared, container_format="bare"
            )
        image = connection.image.get_image(created.id)
        assert image.status == "active"
        assert image.virtual_size == 1 << 30
        assert image.size == disk.stat().st_size
        assert connection.image.download_image(image).content == disk.read_bytes()
    base = make_disk(tmp_path / "base.qcow2", "qcow2", "1G")
    evil = make_disk(
        tmp_path / "evil.qcow2", "qcow2", "1G", f"backing_file={base}", "backing_fmt=qcow2"
    )
    with evil.open("rb") as handle, pytest.raises(openstack.exceptions.HttpException):
        connection.image.create_image(
            name="evil", data=handle, disk_format="qcow2", container_format="bare"
        )
    names = sorted(i.name for i in connection.image.images())
    assert names == ["real-qcow2", "real-vmdk"]  # the SDK deleted the refused one
    connection.close()


def test_an_upload_over_the_size_limit_is_413_and_the_image_stays_queued() -> None:
    with (
        Service(env={"IMAGEDEPOT_MAX_IMAGE_BYTES": "100000"}) as small,
        project_client(small) as client,
    ):
        image_id = create(client, name="big")["id"]
        declared = client.put(
            f"/v2/images/{image_id}/file",
            content=b"\0" * 10,
            headers={
                "Content-Type": "application/octet-stream",
                "X-OpenStack-Image-Size": "100001",
            },
        )
        assert_error(declared, 413)
        assert_error(upload(client, image_id, os.urandom(150_000)), 413)
        assert client.get(f"/v2/images/{image_id}").json()["status"] == "queued"
        assert small.stored_digests() == set()
        assert upload(client, image_id, b"fits").status_code == 204
