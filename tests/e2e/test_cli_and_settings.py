"""The CLI against a running server, and server settings that change how images are pulled:
mirrors (docker.io served by a loopback registry) and `all` platforms."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.images import make_layer, push_image, push_index
from tests.support.registry import RegistryServer
from tests.support.service import Service, wait_for_status


@pytest.fixture(scope="module")
def mirror() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="module")
def configured(mirror: RegistryServer) -> Iterator[Service]:
    env = {"IMAGEDEPOT_MIRRORS": f"docker.io={mirror.endpoint}", "IMAGEDEPOT_PLATFORMS": "all"}
    with Service(env=env) as running:
        yield running


def test_the_cli_creates_waits_lists_shows_and_deletes(
    service: Service, registry: RegistryServer
) -> None:
    pushed = push_image(registry.url, "cli/app", "1", [make_layer(seed=200)])
    token = service.credential("cli", "admin")
    common = ["--server", service.url, "--token", token]
    image = f"{registry.endpoint}/cli/app:1"
    created = service.cli("caches", "create", "from-cli", "--image", image, "--wait", *common)
    cache_id = created.stdout.split()[0]
    assert "Available" in created.stdout

    listed = json.loads(service.cli("caches", "list", "--json", *common).stdout)
    assert [(item["id"], item["status"]) for item in listed] == [(cache_id, "Available")]
    shown = json.loads(service.cli("caches", "get", cache_id, "--json", *common).stdout)
    assert shown["progress"][0]["digest"] == pushed.manifest_digest

    deleted = service.cli("caches", "delete", cache_id, "--wait", *common)
    assert f"{cache_id} deleted" in deleted.stdout
    assert json.loads(service.cli("caches", "list", "--json", *common).stdout) == []


def test_the_cli_reports_a_failed_build(service: Service, registry: RegistryServer) -> None:
    token = service.credential("cli-fail", "admin")
    result = service.cli(
        "caches",
        "create",
        "broken",
        "--image",
        f"{registry.endpoint}/cli/absent:1",
        "--wait",
        "--server",
        service.url,
        "--token",
        token,
        check=False,
    )
    assert result.returncode != 0
    assert "Failed" in result.stderr
    assert "cli/absent" in result.stderr


def test_waiting_for_a_build_gives_up_at_the_timeout(
    service: Service, registry: RegistryServer
) -> None:
    from tests.support.faultproxy import FaultProxy

    pushed = push_image(registry.url, "cli/slow", "1", [make_layer(512 * 1024, seed=201)])
    token = service.credential("cli-timeout", "admin")
    with FaultProxy(registry.url) as proxy:
        proxy.throttle(f"/blobs/{pushed.layer_digests[0]}", 64 * 1024)
        started = time.monotonic()
        result = service.cli(
            "caches",
            "create",
            "slow",
            "--image",
            f"{proxy.endpoint}/cli/slow:1",
            "--wait",
            "--timeout",
            "1.5",
            "--server",
            service.url,
            "--token",
            token,
            check=False,
        )
        waited = time.monotonic() - started
    assert result.returncode == 1
    assert "still Creating after 1.5 s" in result.stderr
    assert waited < 7  # the 512 KiB layer alone takes 8 s at this rate


def test_the_cli_refuses_without_a_token(service: Service) -> None:
    result = service.cli("caches", "list", "--server", service.url, check=False)
    assert result.returncode != 0
    assert "token" in result.stderr


def test_every_api_command_says_when_the_server_cannot_be_reached(service: Service) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"  # bound, never listening
        for command in (
            ("caches", "list"),
            ("caches", "get", "some-id"),
            ("images", "list"),
            ("images", "delete", "some-id"),
        ):
            result = service.cli(*command, "--server", closed, "--token", "t", check=False)
            assert result.returncode == 1, (command, result.stderr)
            assert "cannot reach the server" in result.stderr, (command, result.stderr)
            assert "Traceback" not in result.stderr


def test_docker_hub_images_come_from_the_configured_mirror(
    configured: Service, mirror: RegistryServer
) -> None:
    pushed = push_image(mirror.url, "library/busybox", "latest", [make_layer(seed=210)])
    token = configured.credential("mirrored")
    with configured.client(token) as client:
        created = client.post("/v5/imagecaches", json={"name": "hub", "images": ["busybox"]})
        assert created.status_code == 201
        done = wait_for_status(client, created.json()["image_cache"]["id"], {"Available", "Failed"})
        assert done["status"] == "Available", done
        assert done["images"] == ["busybox"]
    assert {pushed.manifest_digest, *pushed.blob_digests} <= configured.stored_digests()


def test_all_platforms_keeps_every_manifest_of_an_index(
    configured: Service, registry: RegistryServer
) -> None:
    index = push_index(
        registry.url,
        "every/app",
        "1",
        {"linux/amd64": [make_layer(seed=220)], "linux/arm64": [make_layer(seed=221)]},
    )
    token = configured.credential("all-platforms")
    with configured.client(token) as client:
        created = client.post(
            "/v5/imagecaches",
            json={"name": "every", "images": [f"{registry.endpoint}/every/app:1"]},
        )
        done = wait_for_status(client, created.json()["image_cache"]["id"], {"Available", "Failed"})
        assert done["status"] == "Available", done
    stored = configured.stored_digests()
    for image in index.images.values():
        assert {image.manifest_digest, *image.blob_digests} <= stored
