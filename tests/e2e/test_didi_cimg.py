"""DiDi-style custom images (CIMG) end to end: a real `imagedepot serve` with two regions, the
seed's list call and the create/import/changeName/delete jobs over plain HTTP, sharing images
(and their bytes) with the Glance dialect."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.glance import upload
from tests.support.service import Service

_projects = itertools.count()


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with Service(env={"IMAGEDEPOT_REGIONS": "bj,gz"}) as running:
        yield running


def project_client(service: Service) -> httpx.Client:
    token = service.credential(f"didi-{next(_projects)}")
    return httpx.Client(
        base_url=service.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def call(client: httpx.Client, path: str, body: dict[str, Any], errno: int = 0) -> Any:
    response = client.post(f"/dicloud/i/storage/cimg/{path}", json=body)
    envelope = response.json()
    assert envelope["errno"] == errno, envelope
    assert envelope["requestId"] == response.headers["x-request-id"]
    if errno == 0:
        assert response.status_code == 200
        assert envelope["errmsg"] == "ok"
    return envelope["data"] if errno == 0 else envelope


def snapshot(client: httpx.Client, data: bytes) -> str:
    created = client.post(
        "/v2/images",
        json={
            "name": "snap",
            "disk_format": "raw",
            "container_format": "bare",
            "image_type": "snapshot",
            "os_distro": "CentOS",
            "os_version": "7",
            "architecture": "64bit",
            "os_type": "linux",
            "min_disk": 8,
        },
    )
    assert created.status_code == 201, created.text
    image_id: str = created.json()["id"]
    uploaded = upload(client, image_id, data)
    assert uploaded.status_code == 204, uploaded.text
    return image_id


def test_create_list_import_rename_delete(service: Service) -> None:
    data = os.urandom(300_000)
    with project_client(service) as client:
        snap_id = snapshot(client, data)
        stored = service.stored_digests()
        jobs = call(
            client,
            "create",
            {"regionId": "bj", "cimg": [{"name": "北京02", "snapUuid": snap_id}]},
        )
        assert len(jobs) == 1
        job = jobs[0]
        assert job["type"] == "CreateCIMG"
        assert (job["done"], job["success"], job["progress"]) == (True, True, 100)
        assert service.stored_digests() == stored  # no byte copied

        listed = call(
            client,
            "list",
            {"regionId": "bj", "start": 0, "limit": 20, "condition": {"names": ["北京02"]}},
        )
        assert listed["count"] == 1
        item = listed["items"][0]
        assert item["cimgUuid"] == job["resourceUuid"]
        assert len(item["cimgUuid"]) == 32
        assert item["cimgId"].startswith("cimg-")
        assert item["name"] == "北京02"
        assert item["status"] == "Ready"
        assert item["regions"] == ["bj"]
        assert item["size"] == len(data)
        assert (item["osFamily"], item["osVersion"], item["osArch"]) == ("CentOS", "7", "64bit")
        assert item["platform"] == "Linux"
        assert item["type"] == "custom"
        assert item["requirement"] == {"minDiskSize": 8 << 30}
        assert isinstance(item["createTime"], int)
        assert item["createTime"] > 1_600_000_000_000

        result = client.get(
            "/dicloud/i/result", params={"regionId": "bj", "jobUuids": job["jobUuid"]}
        ).json()
        assert result["errno"] == 0
        assert [j["jobUuid"] for j in result["data"]] == [job["jobUuid"]]

        imported = call(
            client,
            "import",
            {
                "regionId": "gz",
                "cimg": [
                    {"name": "copy", "originImageUuid": item["cimgUuid"], "originRegionId": "bj"}
                ],
            },
        )
        assert imported[0]["type"] == "ImportCIMG"
        in_gz = call(client, "list", {"regionId": "gz", "start": 0, "limit": 20})
        assert [i["name"] for i in in_gz["items"]] == ["copy"]
        assert in_gz["items"][0]["regions"] == ["gz"]

        renamed = call(
            client,
            "changeName",
            {"regionId": "bj", "cimg": [{"cimgUuid": item["cimgUuid"], "name": "北京03"}]},
        )
        assert renamed[0]["type"] == "ChangeCIMGName"
        names = call(client, "list", {"regionId": "bj", "start": 0, "limit": 20})["items"]
        assert sorted(i["name"] for i in names) == ["snap", "北京03"]

        copy_id = uuid.UUID(in_gz["items"][0]["cimgUuid"])
        glance_copy = client.get(f"/v2/images/{copy_id}/file")
        assert glance_copy.content == data

        deleted = call(
            client, "delete", {"regionId": "bj", "cimg": [{"cimgUuid": item["cimgUuid"]}]}
        )
        assert deleted[0]["type"] == "DeleteCIMG"
        after = call(client, "list", {"regionId": "bj", "start": 0, "limit": 20})
        assert [i["name"] for i in after["items"]] == ["snap"]
        assert after["count"] == 1


def test_paging_with_start_and_limit(service: Service) -> None:
    with project_client(service) as client:
        for name in ("a", "b", "c"):
            assert client.post("/v2/images", json={"name": name}).status_code == 201
        first = call(client, "list", {"regionId": "bj", "start": 0, "limit": 2})
        rest = call(client, "list", {"regionId": "bj", "start": 2, "limit": 2})
        assert first["count"] == rest["count"] == 3
        names = [i["name"] for i in first["items"] + rest["items"]]
        assert sorted(names) == ["a", "b", "c"]


def test_bad_parameters_name_the_field_and_change_nothing(service: Service) -> None:
    with project_client(service) as client:
        snap_id = snapshot(client, b"x" * 1000)
        for path, body, field in [
            ("list", {"regionId": "nowhere", "limit": 1}, "regionId"),
            ("list", {"regionId": "bj", "limit": 0}, "limit"),
            ("list", {"regionId": "bj", "limit": 5, "condition": {"names": "x"}}, "condition"),
            ("create", {"regionId": "bj", "cimg": []}, "cimg"),
            (
                "create",
                {
                    "regionId": "bj",
                    "cimg": [
                        {"name": "ok", "snapUuid": snap_id},
                        {"name": "", "snapUuid": snap_id},
                    ],
                },
                "cimg[1].name",
            ),
            ("delete", {"regionId": "bj", "cimg": [{"cimgUuid": "zz"}]}, "cimg[0].cimgUuid"),
            (
                "import",
                {
                    "regionId": "gz",
                    "cimg": [{"name": "x", "originImageUuid": snap_id, "originRegionId": "mars"}],
                },
                "cimg[0].originRegionId",
            ),
        ]:
            envelope = call(client, path, body, errno=13)
            assert field in envelope["errmsg"], envelope
            assert envelope["data"] is None
        missing = "0123456789abcdef0123456789abcdef"
        gone = call(
            client,
            "create",
            {
                "regionId": "bj",
                "cimg": [{"name": "ok", "snapUuid": snap_id}, {"name": "no", "snapUuid": missing}],
            },
            errno=41026,
        )
        assert "01234567-89ab" in gone["errmsg"]
        assert call(client, "list", {"regionId": "bj", "limit": 20})["count"] == 1


def test_another_projects_cimg_is_exactly_as_missing(service: Service) -> None:
    with project_client(service) as owner, project_client(service) as stranger:
        snap_id = snapshot(owner, b"y" * 1000)
        missing = "00000000-0000-4000-8000-000000000000"
        answers = [
            call(stranger, "delete", {"regionId": "bj", "cimg": [{"cimgUuid": target}]}, 41026)
            for target in (snap_id, missing)
        ]
        assert [a["errmsg"].replace(snap_id, missing) for a in answers] == [
            answers[1]["errmsg"]
        ] * 2
        assert call(stranger, "list", {"regionId": "bj", "limit": 20})["count"] == 0


def test_without_a_token_errno_4(service: Service) -> None:
    response = httpx.post(
        f"{service.url}/dicloud/i/storage/cimg/list", json={"regionId": "bj", "limit": 1}
    )
    assert response.status_code == 401
    assert response.json()["errno"] == 4
