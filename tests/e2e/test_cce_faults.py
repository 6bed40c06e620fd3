"""Faults between imagedepot and its upstream, injected by a proxy in front of a real
docker-registry: the cache retries and succeeds, or fails naming the cause, and the store
never holds an unverified byte. Also: a `kill -9` mid-build, then a restart."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.images import make_layer, push_image
from tests.support.registry import RegistryServer
from tests.support.service import Service, wait_for_status, wait_gone


@pytest.fixture(scope="module")
def proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    with FaultProxy(registry.url) as running:
        yield running


@pytest.fixture
def fresh_proxy(proxy: FaultProxy) -> Iterator[FaultProxy]:
    proxy.clear()
    yield proxy
    proxy.clear()


def assert_store_is_verified(service: Service) -> None:
    for path in service.blob_dir().glob("*/*"):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, path
    assert list((service.data_dir / "blobs" / "tmp").iterdir()) == []


def build(service: Service, project: str, name: str, image: str) -> dict[str, object]:
    token = service.credential(project)
    with service.client(token) as client:
        created = client.post("/v5/imagecaches", json={"name": name, "images": [image]})
        assert created.status_code == 201, created.text
        return wait_for_status(client, created.json()["image_cache"]["id"], {"Available", "Failed"})


def test_upstream_500s_are_retried(
    service: Service, registry: RegistryServer, fresh_proxy: FaultProxy
) -> None:
    layer = make_layer(seed=101)
    push_image(registry.url, "faults/five", "1", [layer])
    fresh_proxy.status(f"/blobs/{layer.digest}", 500, times=2)
    fresh_proxy.status("/manifests/1", 503, times=1)
    done = build(service, "faults-500", "five", f"{fresh_proxy.endpoint}/faults/five:1")
    assert done["status"] == "Available", done
    assert len(fresh_proxy.seen(f"/blobs/{layer.digest}", "GET")) == 3
    assert layer.digest in service.stored_digests()
    assert_store_is_verified(service)


def test_persistent_500s_fail_the_cache_with_the_cause(
    service: Service, registry: RegistryServer, fresh_proxy: FaultProxy
) -> None:
    layer = make_layer(seed=102)
    push_image(registry.url, "faults/always", "1", [layer])
    fresh_proxy.status(f"/blobs/{layer.digest}", 500, times=None)
    image = f"{fresh_proxy.endpoint}/faults/always:1"
    done = build(service, "faults-always", "always", image)
    assert done["status"] == "Failed"
    message = str(done["message"])
    assert image in message
    assert "upstream error" in message
    assert "500" in message
    assert layer.digest not in service.stored_digests()
    assert_store_is_verified(service)


def test_a_connection_cut_mid_blob_is_resumed(
    service: Service, registry: RegistryServer, fresh_proxy: FaultProxy
) -> None:
    layer = make_layer(400 * 1024, seed=103)
    push_image(registry.url, "faults/cut", "1", [layer])
    fresh_proxy.reset_after(f"/blobs/{layer.digest}", 150 * 1024)
    done = build(service, "faults-cut", "cut", f"{fresh_proxy.endpoint}/faults/cut:1")
    assert done["status"] == "Available", done
    attempts = fresh_proxy.seen(f"/blobs/{layer.digest}", "GET")
    assert len(attempts) == 2
    assert attempts[1].range is not None
    assert attempts[1].range.startswith("bytes=")
    assert layer.digest in service.stored_digests()
    assert_store_is_verified(service)


def test_a_truncated_blob_is_fetched_again(
    service: Service, registry: RegistryServer, fresh_proxy: FaultProxy
) -> None:
    layer = make_layer(200 * 1024, seed=104)
    push_image(registry.url, "faults/short", "1", [layer])
    fresh_proxy.truncate(f"/blobs/{layer.digest}", 50 * 1024)
    done = build(service, "faults-short", "short", f"{fresh_proxy.endpoint}/faults/short:1")
    assert done["status"] == "Available", done
    assert_store_is_verified(service)


def test_a_corrupt_blob_fails_and_is_never_stored(
    service: Service, registry: RegistryServer, fresh_proxy: FaultProxy
) -> None:
    layer = make_layer(seed=105)
    push_image(registry.url, "faults/bad", "1", [layer])
    fresh_proxy.corrupt(f"/blobs/{layer.digest}", times=None)
    image = f"{fresh_proxy.endpoint}/faults/bad:1"
    done = build(service, "faults-corrupt", "bad", image)
    assert done["status"] == "Failed"
    assert image in str(done["message"])
    assert "digest" in str(done["message"])
    assert layer.digest not in service.stored_digests()
    assert_store_is_verified(service)


def test_stored_blobs_are_not_fetched_again(
    service: Service, registry: RegistryServer, fresh_proxy: FaultProxy
) -> None:
    base = make_layer(seed=106)
    push_image(registry.url, "faults/first", "1", [base])
    push_image(registry.url, "faults/second", "1", [base, make_layer(seed=107)])
    assert (
        build(service, "faults-reuse", "first", f"{fresh_proxy.endpoint}/faults/first:1")["status"]
        == "Available"
    )
    assert len(fresh_proxy.seen(f"/blobs/{base.digest}", "GET")) == 1
    assert (
        build(service, "faults-reuse", "second", f"{fresh_proxy.endpoint}/faults/second:1")[
            "status"
        ]
        == "Available"
    )
    assert len(fresh_proxy.seen(f"/blobs/{base.digest}", "GET")) == 1


def test_kill_9_mid_build_then_restart_finishes_the_cache(
    registry: RegistryServer, fresh_proxy: FaultProxy
) -> None:
    big = make_layer(1024 * 1024, seed=108)
    pushed = push_image(registry.url, "faults/slow", "1", [big, make_layer(seed=109)])
    fresh_proxy.throttle(f"/blobs/{big.digest}", 256 * 1024, times=1)
    service = Service().start()
    try:
        token = service.credential("faults-kill")
        with service.client(token) as client:
            created = client.post(
                "/v5/imagecaches",
                json={"name": "slow", "images": [f"{fresh_proxy.endpoint}/faults/slow:1"]},
            )
            cache_id = created.json()["image_cache"]["id"]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                state = client.get(f"/v5/imagecaches/{cache_id}/progress").json()["images"][0]
                temps = list((service.data_dir / "blobs" / "tmp").iterdir())
                if temps and 0 < state["pulled_bytes"] < state["size_bytes"] - big.size // 2:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the build never started writing")
        service.kill9()
        assert big.digest not in service.stored_digests(), "a partial blob became visible"
        service.start()
        with service.client(token) as client:
            done = wait_for_status(client, cache_id, {"Available", "Failed"})
        assert done["status"] == "Available", done
        assert {pushed.manifest_digest, *pushed.blob_digests} <= service.stored_digests()
        assert_store_is_verified(service)
        fsck = service.cli("fsck", "--data-dir", str(service.data_dir), "--json")
        assert '"damaged": []' in fsck.stdout
    finally:
        service.stop()


def test_deleting_a_cache_mid_build_stops_it_and_releases_its_blobs(
    service: Service, registry: RegistryServer, fresh_proxy: FaultProxy
) -> None:
    slow, quick = make_layer(1024 * 1024, seed=110), make_layer(seed=111)
    push_image(registry.url, "faults/abandoned", "1", [slow, quick])
    fresh_proxy.throttle(f"/blobs/{slow.digest}", 128 * 1024, times=1)
    token = service.credential("faults-abandon")
    with service.client(token) as client:
        created = client.post(
            "/v5/imagecaches",
            json={"name": "abandoned", "images": [f"{fresh_proxy.endpoint}/faults/abandoned:1"]},
        )
        cache_id = created.json()["image_cache"]["id"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            state = client.get(f"/v5/imagecaches/{cache_id}/progress").json()["images"][0]
            if state["size_bytes"] and state["pulled_bytes"] < state["size_bytes"] - slow.size // 2:
                break
            time.sleep(0.05)
        deleted = client.delete(f"/v5/imagecaches/{cache_id}")
        assert deleted.status_code == 202
        assert deleted.json()["image_cache"]["status"] == "Deleting"
        wait_gone(client, cache_id)
    assert quick.digest not in service.stored_digests()
    assert_store_is_verified(service)
