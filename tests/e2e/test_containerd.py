"""containerd, the runtime under most Kubernetes nodes, pulling through imagedepot's registry
port: with the project's token (the token flow), and as a node mirror (`hosts.toml`, the
`?ns=` form, anonymous pulls) while the upstream registry is down."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.containerd import Containerd
from tests.support.images import PushedImage, make_layer, push_image
from tests.support.registry import RegistryServer
from tests.support.service import Service, wait_for_status

_names = itertools.count()


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    with Containerd() as daemon:
        yield daemon


def cache_of(service: Service, token: str, image: str) -> None:
    with service.client(token) as client:
        created = client.post(
            "/v5/imagecaches", json={"name": f"ctr-{next(_names)}", "images": [image]}
        )
        assert created.status_code == 201, created.text
        done = wait_for_status(client, created.json()["image_cache"]["id"], {"Available", "Failed"})
    assert done["status"] == "Available", done


def stored_digests(containerd: Containerd) -> set[str]:
    listed = containerd.ctr("content", "ls", "-q").stdout
    return set(listed.split())


def expect_all_content(containerd: Containerd, pushed: PushedImage) -> None:
    stored = stored_digests(containerd)
    wanted = {pushed.manifest_digest, *pushed.blob_digests}
    assert wanted <= stored, wanted - stored


def test_containerd_pulls_with_the_projects_token(
    service: Service, registry: RegistryServer, containerd: Containerd
) -> None:
    pushed = push_image(
        registry.url, "ctr/app", "v1", [make_layer(200_000, seed=1700), make_layer(seed=1701)]
    )
    token = service.credential("ctr-team")
    cache_of(service, token, f"{registry.endpoint}/ctr/app:v1")
    reference = f"127.0.0.1:{service.registry_port}/ctr/app:v1"
    containerd.ctr("content", "fetch", "--plain-http", "--user", f"node:{token}", reference)
    expect_all_content(containerd, pushed)
    images = containerd.ctr("images", "ls", "-q").stdout.split()
    assert reference in images
    refused = containerd.ctr(
        "content", "fetch", "--plain-http", "--user", "node:wrong", reference, check=False
    )
    assert refused.returncode != 0
    assert "401" in refused.stderr or "unauthorized" in refused.stderr.lower()


def test_containerd_uses_imagedepot_as_a_mirror_while_the_upstream_is_down(
    service: Service, containerd: Containerd, tmp_path: Path
) -> None:
    with RegistryServer() as upstream:
        pushed = push_image(upstream.url, "ctr/base", "3.1", [make_layer(seed=1702)])
        token = service.credential("ctr-mirror")
        cache_of(service, token, f"{upstream.endpoint}/ctr/base:3.1")
        service.set_anonymous_pull("ctr-mirror", True)
        upstream_endpoint = upstream.endpoint
    # The upstream is stopped: everything below comes from imagedepot.
    hosts = tmp_path / "hosts" / upstream_endpoint
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(
        f'server = "http://{upstream_endpoint}"\n\n'
        f'[host."http://127.0.0.1:{service.registry_port}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
    )
    containerd.ctr(
        "content",
        "fetch",
        "--hosts-dir",
        str(tmp_path / "hosts"),
        f"{upstream_endpoint}/ctr/base:3.1",
    )
    expect_all_content(containerd, pushed)
