"""The registry port as a pull-through cache: a project lists the registries it may pull
through; a pull of an image no cache holds is fetched from the upstream once, streamed to the
client, and leaves a cache behind; cached tags keep being served while the upstream is down;
a tag moved upstream is followed; no client ever gets bytes that fail their digest as a
success. Real docker-registry upstream (behind a fault-injecting proxy where a fault or a
request count matters), skopeo and containerd as clients."""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.containerd import Containerd
from tests.support.faultproxy import FaultProxy
from tests.support.images import PushedImage, make_layer, push_image
from tests.support.registry import RegistryServer
from tests.support.service import Service, wait_for_status

_projects = itertools.count()


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["skopeo", *args], capture_output=True, text=True, timeout=180, check=False
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def pull(
    service: Service, token: str, source: str, layout: Path, *, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return skopeo(
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--src-creds",
        f"node:{token}",
        f"docker://127.0.0.1:{service.registry_port}/{source}",
        f"oci:{layout}:pulled",
        check=check,
    )


def layout_digests(layout: Path) -> set[str]:
    return {"sha256:" + path.name for path in (layout / "blobs" / "sha256").iterdir()}


def manifest_digest(layout: Path) -> str:
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    digest: str = entry["digest"]
    return digest


def assert_pulled(layout: Path, pushed: PushedImage) -> None:
    assert manifest_digest(layout) == pushed.manifest_digest
    assert {pushed.manifest_digest, *pushed.blob_digests} <= layout_digests(layout)


def new_project(service: Service, upstream: str, *extra: str) -> tuple[str, str]:
    """A project with a token, allowed to pull `upstream` through (plain HTTP)."""
    project = f"pt-{next(_projects)}"
    token = service.credential(project)
    service.cli(
        "upstreams",
        "add",
        "--data-dir",
        str(service.data_dir),
        "--project",
        project,
        "--registry",
        upstream,
        "--plain-http",
        *extra,
    )
    return project, token


def caches_of(service: Service, token: str) -> list[dict[str, object]]:
    with service.client(token) as client:
        listed = client.get("/v5/imagecaches")
    assert listed.status_code == 200, listed.text
    caches: list[dict[str, object]] = listed.json()["image_caches"]
    return caches


def wait_available(service: Service, token: str, name: str) -> dict[str, object]:
    (cache,) = [c for c in caches_of(service, token) if c["name"] == name]
    with service.client(token) as client:
        return wait_for_status(client, str(cache["id"]), {"Available", "Failed"})


@pytest.fixture(scope="module")
def upstream() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="module")
def proxy(upstream: RegistryServer) -> Iterator[FaultProxy]:
    with FaultProxy(upstream.url) as running:
        yield running


def test_a_miss_is_pulled_through_once_and_leaves_a_cache(
    service: Service, upstream: RegistryServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    pushed = push_image(
        upstream.url,
        "through/app",
        "v1",
        [make_layer(3_000_000, seed=5100), make_layer(200_000, seed=5101)],
    )
    _, token = new_project(service, proxy.endpoint)
    proxy.clear()
    source = "through/app:v1"  # a bare name: the project's only upstream
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        layouts = [tmp_path / f"node-{index}" for index in range(5)]
        results = list(pool.map(lambda layout: pull(service, token, source, layout), layouts))
    assert all(result.returncode == 0 for result in results)
    for layout in layouts:
        assert_pulled(layout, pushed)
    # Five concurrent first pulls: one upstream GET per blob (HEADs may check, never move bytes).
    for digest in pushed.blob_digests:
        gets = proxy.seen(f"/blobs/{digest}", method="GET")
        assert len(gets) == 1, (digest, gets)
    (cache,) = caches_of(service, token)
    assert str(cache["name"]).startswith("pt-through-app-v1-")
    done = wait_available(service, token, str(cache["name"]))
    assert done["status"] == "Available", done
    assert {pushed.manifest_digest, *pushed.blob_digests} <= service.stored_digests()


def test_an_upstream_a_project_does_not_list_is_not_pulled_through(
    service: Service, upstream: RegistryServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    push_image(upstream.url, "through/other", "v1", [make_layer(seed=5110)])
    token = service.credential(f"pt-none-{next(_projects)}")
    proxy.clear()
    refused = pull(service, token, "through/other:v1", tmp_path / "refused", check=False)
    assert refused.returncode != 0
    assert proxy.seen("/v2/through/other") == []
    assert caches_of(service, token) == []


def test_a_blob_the_upstream_corrupts_never_reaches_a_client_as_a_success(
    service: Service, upstream: RegistryServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    layer = make_layer(2_000_000, seed=5120)
    push_image(upstream.url, "through/bad", "v1", [layer])
    _, token = new_project(service, proxy.endpoint)
    proxy.clear()
    proxy.corrupt(f"/blobs/{layer.digest}", times=None)
    registry = f"http://127.0.0.1:{service.registry_port}"
    bearer = {"Authorization": f"Bearer {token}"}
    manifest = httpx.get(
        f"{registry}/v2/{proxy.endpoint}/through/bad/manifests/v1",
        headers={**bearer, "Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert manifest.status_code == 200, manifest.text
    received = b""
    failed = False
    try:
        with httpx.stream(
            "GET", f"{registry}/v2/through/bad/blobs/{layer.digest}", headers=bearer, timeout=60
        ) as response:
            status = response.status_code
            for chunk in response.iter_bytes():
                received += chunk
    except (httpx.RemoteProtocolError, httpx.ReadError):
        failed = True
    # Either refused outright, or cut short: never the whole length with a 200.
    assert failed or status != 200 or len(received) < layer.size
    assert received != layer.data
    assert layer.digest not in service.stored_digests()
    proxy.clear()


def test_containerd_pulls_through_imagedepot_configured_by_mirror_config(
    service: Service, upstream: RegistryServer, tmp_path: Path
) -> None:
    pushed = push_image(upstream.url, "through/node", "1.0", [make_layer(seed=5130)])
    project, token = new_project(service, upstream.endpoint)
    hosts = tmp_path / "certs.d"
    written = service.cli(
        "mirror-config",
        "--data-dir",
        str(service.data_dir),
        "--containerd",
        str(hosts),
        "--project",
        project,
        "--registry-url",
        f"http://127.0.0.1:{service.registry_port}",
        "--token",
        token,
    )
    assert upstream.endpoint in written.stdout
    text = (hosts / upstream.endpoint / "hosts.toml").read_text()
    assert f'server = "http://{upstream.endpoint}"' in text
    with Containerd() as containerd:
        containerd.ctr(
            "content", "fetch", "--hosts-dir", str(hosts), f"{upstream.endpoint}/through/node:1.0"
        )
        stored = set(containerd.ctr("content", "ls", "-q").stdout.split())
    assert {pushed.manifest_digest, *pushed.blob_digests} <= stored
    names = [str(cache["name"]) for cache in caches_of(service, token)]
    assert any(name.startswith("pt-through-node-1-0-") for name in names), names
