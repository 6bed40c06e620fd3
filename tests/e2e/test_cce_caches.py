"""Image caches end to end: a real `imagedepot serve`, a real docker-registry upstream, the CCE v5 API."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import PRIVATE_PASSWORD, PRIVATE_USER
from tests.support.images import make_layer, push_image, push_index
from tests.support.registry import RegistryServer
from tests.support.service import Service, wait_for_status, wait_gone

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/v5/imagecaches", json=body)
    assert response.status_code == 201, response.text
    cache: dict[str, Any] = response.json()["image_cache"]
    return cache


def test_a_cache_pulls_every_blob_once_and_becomes_available(
    service: Service, registry: RegistryServer
) -> None:
    base = make_layer(300 * 1024, seed=1)
    web = push_image(registry.url, "team/web", "v1", [base, make_layer(seed=2)])
    api = push_image(registry.url, "team/api", "v1", [base, make_layer(seed=3)], oci=False)
    token = service.credential("cce-basic", "admin")
    with service.client(token) as client:
        images = [f"{registry.endpoint}/team/web:v1", f"{registry.endpoint}/team/api:v1"]
        cache = create(
            client,
            name="web-and-api",
            images=images,
            image_cache_size=20,
            retention_days=7,
            building_config={"image_pull_secrets": []},
        )
        assert cache["status"] == "Creating"
        assert cache["images"] == images
        done = wait_for_status(client, cache["id"], {"Available", "Failed"})
        assert done["status"] == "Available", done
        assert "message" not in done

        progress = client.get(f"/v5/imagecaches/{cache['id']}/progress").json()
        by_image = {item["image"]: item for item in progress["images"]}
        assert by_image[images[0]]["digest"] == web.manifest_digest
        assert by_image[images[1]]["digest"] == api.manifest_digest
        expected_web = web.total_size + len(web.manifest)
        assert by_image[images[0]]["size_bytes"] == expected_web
        assert by_image[images[0]]["pulled_bytes"] == expected_web

        wanted = {web.manifest_digest, api.manifest_digest, *web.blob_digests, *api.blob_digests}
        stored = service.stored_digests()
        assert wanted <= stored
        for digest in wanted:
            hex_part = digest.removeprefix("sha256:")
            data = (service.blob_dir() / hex_part[:2] / hex_part).read_bytes()
            assert hashlib.sha256(data).hexdigest() == hex_part
        assert list((service.data_dir / "blobs" / "tmp").iterdir()) == []

        listed = client.get("/v5/imagecaches", params={"name": "web-and-api"}).json()
        assert [item["id"] for item in listed["image_caches"]] == [cache["id"]]
        assert client.get("/v5/imagecaches", params={"name": "web-and"}).json() == {
            "image_caches": []
        }


def test_the_seed_shape_of_image_cache_detail(service: Service, registry: RegistryServer) -> None:
    push_image(registry.url, "shape/app", "1", [make_layer(seed=10)])
    token = service.credential("cce-shape")
    # A cache may name only secrets its project holds; this one is for another registry.
    service.add_pull_secret("cce-shape", "secret1", "registry.example", "someone", "pw")
    with service.client(token) as client:
        cache = create(
            client,
            name="shape",
            images=[f"{registry.endpoint}/shape/app:1"],
            image_cache_size=25,
            retention_days=7,
            building_config={
                "cluster": "c271e39f-1a6e-4d3d-8fa8-2a36329c68d2",
                "image_pull_secrets": ["default:secret1"],
            },
        )
        shown = client.get(f"/v5/imagecaches/{cache['id']}")
        assert shown.headers["content-type"] == "application/json"
        assert shown.headers["x-request-id"]
        detail = shown.json()["image_cache"]
        assert set(detail) <= {
            "name",
            "id",
            "created_at",
            "images",
            "image_cache_size",
            "retention_days",
            "building_config",
            "status",
            "message",
        }
        assert detail["image_cache_size"] == 25
        assert detail["building_config"] == {
            "cluster": "c271e39f-1a6e-4d3d-8fa8-2a36329c68d2",
            "image_pull_secrets": ["default:secret1"],
        }
        import re

        assert re.fullmatch(
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} \+0000 UTC", detail["created_at"]
        )


def test_index_images_keep_the_index_and_the_configured_platform(
    service: Service, registry: RegistryServer
) -> None:
    amd, arm = make_layer(seed=20), make_layer(seed=21)
    index = push_index(registry.url, "multi/app", "1", {"linux/amd64": [amd], "linux/arm64": [arm]})
    token = service.credential("cce-index")
    with service.client(token) as client:
        cache = create(client, name="multi", images=[f"{registry.endpoint}/multi/app:1"])
        assert (
            wait_for_status(client, cache["id"], {"Available", "Failed"})["status"] == "Available"
        )
        progress = client.get(f"/v5/imagecaches/{cache['id']}/progress").json()
        assert progress["images"][0]["digest"] == index.digest
    stored = service.stored_digests()
    amd_image, arm_image = index.images["linux/amd64"], index.images["linux/arm64"]
    assert {index.digest, amd_image.manifest_digest, *amd_image.blob_digests} <= stored
    assert arm_image.manifest_digest not in stored
    assert arm_image.layer_digests[0] not in stored


def test_a_shared_blob_survives_the_deletion_of_one_cache(
    service: Service, registry: RegistryServer
) -> None:
    shared, only_first = make_layer(seed=30), make_layer(seed=31)
    first = push_image(registry.url, "share/one", "1", [shared, only_first])
    second = push_image(registry.url, "share/two", "1", [shared])
    token = service.credential("cce-share")
    with service.client(token) as client:
        one = create(client, name="one", images=[f"{registry.endpoint}/share/one:1"])
        two = create(client, name="two", images=[f"{registry.endpoint}/share/two:1"])
        for cache in (one, two):
            assert (
                wait_for_status(client, cache["id"], {"Available", "Failed"})["status"]
                == "Available"
            )
        deleted = client.delete(f"/v5/imagecaches/{one['id']}")
        assert deleted.status_code == 202
        assert deleted.json()["image_cache"]["status"] == "Deleting"
        wait_gone(client, one["id"])
        assert client.get(f"/v5/imagecaches/{one['id']}").json()["error_code"] == "CCE.01404001"
        assert client.get(f"/v5/imagecaches/{two['id']}").status_code == 200
    stored = service.stored_digests()
    assert shared.digest in stored
    assert second.manifest_digest in stored
    assert only_first.digest not in stored
    assert first.manifest_digest not in stored


def test_private_registry_with_a_pull_secret(
    service: Service, private_registry: RegistryServer
) -> None:
    pushed = push_image(
        private_registry.url,
        "secret/app",
        "1",
        [make_layer(seed=40)],
        auth=(PRIVATE_USER, PRIVATE_PASSWORD),
    )
    token = service.credential("cce-private")
    service.add_pull_secret(
        "cce-private", "regcred", private_registry.endpoint, PRIVATE_USER, PRIVATE_PASSWORD
    )
    image = f"{private_registry.endpoint}/secret/app:1"
    with service.client(token) as client:
        anonymous = create(client, name="no-secret", images=[image])
        failed = wait_for_status(client, anonymous["id"], {"Available", "Failed"})
        assert failed["status"] == "Failed"
        assert image in failed["message"]
        assert "unauthorized" in failed["message"].lower()

        with_secret = create(
            client,
            name="with-secret",
            images=[image],
            building_config={"image_pull_secrets": ["default:regcred"]},
        )
        done = wait_for_status(client, with_secret["id"], {"Available", "Failed"})
        assert done["status"] == "Available", done
    assert pushed.manifest_digest in service.stored_digests()
    database = (service.data_dir / "imagedepot.db").read_bytes()
    assert PRIVATE_PASSWORD.encode() not in database


def test_a_missing_image_fails_naming_the_image(service: Service, registry: RegistryServer) -> None:
    token = service.credential("cce-missing")
    image = f"{registry.endpoint}/nothing/here:1"
    with service.client(token) as client:
        cache = create(client, name="missing", images=[image])
        failed = wait_for_status(client, cache["id"], {"Available", "Failed"})
    assert failed["status"] == "Failed"
    assert image in failed["message"]
    assert "not found" in failed["message"].lower() or "unknown" in failed["message"].lower()


def test_an_unreachable_registry_fails_the_cache(service: Service) -> None:
    from tests.support.ports import free_port

    token = service.credential("cce-unreachable")
    image = f"127.0.0.1:{free_port()}/gone/app:1"
    with service.client(token) as client:
        cache = create(client, name="unreachable", images=[image])
        failed = wait_for_status(client, cache["id"], {"Available", "Failed"})
    assert failed["status"] == "Failed"
    assert image in failed["message"]


def test_images_over_the_size_budget_fail_before_pulling(
    service: Service, registry: RegistryServer
) -> None:
    layer = make_layer(seed=50)
    push_image(registry.url, "huge/app", "1", [layer], claimed_sizes={layer.digest: 30 * 1024**3})
    token = service.credential("cce-budget")
    image = f"{registry.endpoint}/huge/app:1"
    with service.client(token) as client:
        cache = create(client, name="budget", images=[image], image_cache_size=20)
        failed = wait_for_status(client, cache["id"], {"Available", "Failed"})
    assert failed["status"] == "Failed"
    assert "size budget exceeded" in failed["message"]
    assert image in failed["message"]
    assert layer.digest not in service.stored_digests()


BAD_BODIES: list[tuple[Any, str]] = [
    ({"name": "Bad_Name", "images": ["busybox"]}, "name"),
    ({"name": "ends-", "images": ["busybox"]}, "name"),
    ({"name": "x" * 129, "images": ["busybox"]}, "name"),
    ({"name": "empty", "images": []}, "images"),
    ({"name": "many", "images": [f"img{i}" for i in range(21)]}, "images"),
    ({"name": "small", "images": ["busybox"], "image_cache_size": 19}, "image_cache_size"),
    ({"name": "big", "images": ["busybox"], "image_cache_size": 401}, "image_cache_size"),
    ({"name": "ret", "images": ["busybox"], "retention_days": 10001}, "retention_days"),
    ({"name": "neg", "images": ["busybox"], "retention_days": -1}, "retention_days"),
    ({"name": "typ", "images": ["busybox"], "image_cache_size": "20"}, "image_cache_size"),
    ({"name": "typ", "images": "busybox"}, "images"),
    ({"name": "typ", "images": [1]}, "images[0]"),
    ({"name": "unk", "images": ["busybox"], "colour": "red"}, "colour"),
    ({"name": "bref", "images": ["UPPER:case:x"]}, "images[0]"),
    (
        {"name": "sec", "images": ["busybox"], "building_config": {"image_pull_secrets": ["x"]}},
        "building_config.image_pull_secrets[0]",
    ),
    ({"images": ["busybox"]}, "name"),
    ([1, 2], "JSON object"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_input_is_a_400_naming_the_field_and_creates_nothing(
    service: Service, body: Any, field: str
) -> None:
    token = service.credential("cce-bad-input")
    with service.client(token) as client:
        response = client.post(
            "/v5/imagecaches",
            content=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400, response.text
        error = response.json()
        assert error["error_code"] == "CCE.01400001"
        assert field in error["error_msg"]
        assert response.headers["x-request-id"]
        assert client.get("/v5/imagecaches").json() == {"image_caches": []}


def test_malformed_json_is_a_400(service: Service) -> None:
    token = service.credential("cce-malformed")
    with service.client(token) as client:
        response = client.post(
            "/v5/imagecaches", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400
        assert "JSON" in response.json()["error_msg"]


def test_a_duplicate_name_is_a_409(service: Service, registry: RegistryServer) -> None:
    token = service.credential("cce-dup")
    with service.client(token) as client:
        create(client, name="twice", images=[f"{registry.endpoint}/nothing/x:1"])
        again = client.post("/v5/imagecaches", json={"name": "twice", "images": ["busybox"]})
        assert again.status_code == 409
        assert again.json()["error_code"] == "CCE.01409001"
        assert len(client.get("/v5/imagecaches").json()["image_caches"]) == 1


def test_no_or_bad_token_is_a_401_in_the_cce_shape(service: Service) -> None:
    for headers in ({}, {"X-Auth-Token": "nope"}, {"Authorization": "Bearer nope"}):
        response = httpx.get(f"{service.url}/v5/imagecaches", headers=headers)
        assert response.status_code == 401
        assert response.json()["error_code"] == "CCE.01401001"


def test_bearer_tokens_work_too(service: Service) -> None:
    token = service.credential("cce-bearer")
    response = httpx.get(
        f"{service.url}/v5/imagecaches", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200


def test_projects_do_not_see_each_other(service: Service, registry: RegistryServer) -> None:
    owner, stranger = service.credential("cce-owner"), service.credential("cce-stranger")
    with service.client(owner) as client:
        cache = create(client, name="mine", images=[f"{registry.endpoint}/nothing/y:1"])
    with service.client(stranger) as client:
        assert client.get(f"/v5/imagecaches/{cache['id']}").status_code == 404
        assert client.delete(f"/v5/imagecaches/{cache['id']}").status_code == 404
        assert client.get("/v5/imagecaches", params={"name": "mine"}).json() == {"image_caches": []}
    with service.client(owner) as client:
        assert client.get(f"/v5/imagecaches/{cache['id']}").status_code == 200


def test_a_reader_may_list_but_not_create_or_delete(service: Service) -> None:
    reader = service.credential("cce-reader", "reader")
    with service.client(reader) as client:
        assert client.get("/v5/imagecaches").status_code == 200
        refused = client.post("/v5/imagecaches", json={"name": "nope", "images": ["busybox"]})
        assert refused.status_code == 403
        assert refused.json()["error_code"] == "CCE.01403001"


def test_two_deletes_at_once_never_500(service: Service, registry: RegistryServer) -> None:
    push_image(registry.url, "race/app", "1", [make_layer(seed=60)])
    token = service.credential("cce-race")
    with service.client(token) as client:
        cache = create(client, name="race", images=[f"{registry.endpoint}/race/app:1"])
        wait_for_status(client, cache["id"], {"Available", "Failed"})
    statuses: list[int] = []

    def delete() -> None:
        with service.client(token) as client:
            statuses.append(client.delete(f"/v5/imagecaches/{cache['id']}").status_code)

    threads = [threading.Thread(target=delete) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 202 in statuses
    assert set(statuses) <= {202, 404}
    with service.client(token) as client:
        wait_gone(client, cache["id"])


def test_unknown_paths_answer_json(service: Service) -> None:
    response = httpx.get(f"{service.url}/v5/nothing")
    assert response.status_code == 404
    assert response.json()["error_code"] == "CCE.01404001"
