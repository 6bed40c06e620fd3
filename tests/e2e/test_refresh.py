"""Caches that follow moved tags: a refresh interval (CCE `refresh_interval`, ImageSnapshot
`spec.refreshInterval`) makes the worker re-resolve the tags; a moved tag is built as the
next generation while the current one stays served, then served in its place, told as a
`TagMoved` Event, with each tag's digest and last check in the status. Real docker-registry
behind a fault proxy (to slow the next generation's layer down), skopeo-free: raw pulls."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.images import make_layer, push_image
from tests.support.registry import RegistryServer
from tests.support.service import Service, wait_for_status

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def upstream() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


def tag_digest(service: Service, token: str, name: str) -> tuple[int, str | None]:
    answer = httpx.get(
        f"http://127.0.0.1:{service.registry_port}/v2/{name}/manifests/v1",
        headers={"Authorization": f"Bearer {token}", "Accept": MANIFEST},
        timeout=10,
    )
    return answer.status_code, answer.headers.get("Docker-Content-Digest")


def test_a_moved_tag_becomes_the_next_generation_while_the_old_one_is_served(
    service: Service, upstream: RegistryServer
) -> None:
    first = push_image(upstream.url, "fresh/app", "v1", [make_layer(seed=5200)])
    token = service.credential("refresh-team")
    with FaultProxy(upstream.url) as proxy, service.client(token) as client:
        created = client.post(
            "/v5/imagecaches",
            json={
                "name": "follows-tags",
                "images": [f"{proxy.endpoint}/fresh/app:v1"],
                "refresh_interval": "10s",
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["image_cache"]["refresh_interval"] == "10s"
        cache_id = created.json()["image_cache"]["id"]
        assert wait_for_status(client, cache_id, {"Available", "Failed"})["status"] == "Available"
        assert tag_digest(service, token, "fresh/app") == (200, first.manifest_digest)

        new_layer = make_layer(3_000_000, seed=5201)
        proxy.throttle(f"/blobs/{new_layer.digest}", 1_000_000)  # the next generation: >= 3 s
        moved = push_image(upstream.url, "fresh/app", "v1", [new_layer])
        seen: list[tuple[float, int, str | None, str]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, digest = tag_digest(service, token, "fresh/app")
            phase = client.get(f"/v5/imagecaches/{cache_id}").json()["image_cache"]["status"]
            seen.append((time.monotonic(), status, digest, phase))
            if digest == moved.manifest_digest:
                break
            time.sleep(0.2)
        assert seen[-1][2] == moved.manifest_digest, seen[-5:]
        assert all(status == 200 and phase == "Available" for _, status, _, phase in seen)
        switched = seen[-1][0]
        # The next generation's layer took at least 3 s to arrive: within its last 2 s before
        # the switch, the old content was still what a pull got.
        assert any(
            digest == first.manifest_digest and switched - 2.0 <= at < switched
            for at, _, digest, _ in seen
        ), seen[-15:]

        progress = client.get(f"/v5/imagecaches/{cache_id}/progress").json()
        (image,) = progress["images"]
        assert image["digest"] == moved.manifest_digest
        assert image["moved_from"] == first.manifest_digest
        assert image["checked_at"]
    events = httpx.get(
        f"{service.url}/api/v1/namespaces/default/events",
        headers={"Authorization": f"Bearer {token}"},
    ).json()["items"]
    messages = [e["message"] for e in events if e["reason"] == "TagMoved"]
    assert messages == [
        f"tag {proxy.endpoint}/fresh/app:v1 moved from {first.manifest_digest} to "
        f"{moved.manifest_digest}"
    ]
    snapshot = httpx.get(
        f"{service.url}/apis/cci/v2/imagesnapshots/follows-tags",
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    assert snapshot["spec"]["refreshInterval"] == "10s"
    assert snapshot["metadata"]["generation"] >= 2
    assert snapshot["status"]["images"][0]["movedFrom"] == first.manifest_digest
    assert snapshot["status"]["images"][0]["lastCheckedTime"]
    # What only the previous generation used is released.
    deadline = time.monotonic() + 10
    while first.layer_digests[0] in service.stored_digests() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.layer_digests[0] not in service.stored_digests()


def test_the_refresh_interval_can_change_on_a_built_snapshot_and_is_checked(
    service: Service, upstream: RegistryServer
) -> None:
    push_image(upstream.url, "fresh/steady", "v1", [make_layer(seed=5210)])
    token = service.credential("refresh-edit")
    headers = {"Authorization": f"Bearer {token}"}
    with service.client(token) as client:
        created = client.post(
            "/v5/imagecaches",
            json={"name": "steady", "images": [f"{upstream.endpoint}/fresh/steady:v1"]},
        )
        cache_id = created.json()["image_cache"]["id"]
        assert wait_for_status(client, cache_id, {"Available", "Failed"})["status"] == "Available"
        for body, field in (
            ({"refresh_interval": "5x"}, "refresh_interval"),
            ({"refresh_interval": "5s"}, "refresh_interval"),
            ({"refresh_interval": 60}, "refresh_interval"),
        ):
            refused = client.post(
                "/v5/imagecaches", json={"name": "bad", "images": ["busybox"], **body}
            )
            assert refused.status_code == 400, refused.text
            assert field in refused.json()["error_msg"]
    url = f"{service.url}/apis/cci/v2/imagesnapshots/steady"
    patch = {**headers, "Content-Type": "application/merge-patch+json"}
    changed = httpx.patch(url, json={"spec": {"refreshInterval": "6h"}}, headers=patch)
    assert changed.status_code == 200, changed.text
    assert changed.json()["spec"]["refreshInterval"] == "6h"
    assert changed.json()["status"]["phase"] == "Available"
    refused = httpx.patch(url, json={"spec": {"refreshInterval": "soon"}}, headers=patch)
    assert refused.status_code == 422, refused.text
    assert "spec.refreshInterval" in refused.text
    assert httpx.get(url, headers=headers).json()["spec"]["refreshInterval"] == "6h"
