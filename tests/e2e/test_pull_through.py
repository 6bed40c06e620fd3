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
    service.allow_pull_through(project, upstream, *extra)
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


def registry_get(service: Service, token: str, path: str, **headers: str) -> httpx.Response:
    return httpx.get(
        f"http://127.0.0.1:{service.registry_port}{path}",
        headers={"Authorization": f"Bearer {token}", **headers},
        timeout=60,
    )


def stale_serves(service: Service) -> float:
    text = httpx.get(f"{service.url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("imagedepot_pull_through_stale_serves_total{")
    )


def test_cached_tags_are_served_while_the_upstream_fails_or_is_gone(
    service: Service, tmp_path: Path
) -> None:
    with RegistryServer() as own, FaultProxy(own.url) as front:
        pushed = push_image(own.url, "through/steady", "v1", [make_layer(seed=5140)])
        _, token = new_project(service, front.endpoint)
        pull(service, token, "through/steady:v1", tmp_path / "first")
        (cache,) = caches_of(service, token)
        assert wait_available(service, token, str(cache["name"]))["status"] == "Available"
        before = stale_serves(service)
        # 503, 429 and 404 for the tag: each pull still gets the cached copy.
        for status in (503, 429, 404):
            front.status("/manifests/v1", status, times=None)
            layout = tmp_path / f"during-{status}"
            pull(service, token, "through/steady:v1", layout)
            assert_pulled(layout, pushed)
            front.clear()
        assert stale_serves(service) >= before + 3
        front.stop()
        own.stop()
        # The upstream is gone altogether.
        pull(service, token, "through/steady:v1", tmp_path / "gone")
        assert_pulled(tmp_path / "gone", pushed)
    events = httpx.get(
        f"{service.url}/api/v1/namespaces/default/events",
        headers={"Authorization": f"Bearer {token}"},
    ).json()["items"]
    warnings = [e for e in events if e["reason"] == "UpstreamUnavailable"]
    assert warnings
    assert "served the cached copy" in warnings[0]["message"]
    assert warnings[0]["involvedObject"]["name"] == cache["name"]


def test_a_tag_moved_upstream_is_followed_or_kept_as_the_check_policy_says(
    service: Service, upstream: RegistryServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    first = push_image(upstream.url, "through/moving", "v1", [make_layer(seed=5150)])
    _, always = new_project(service, proxy.endpoint)
    _, never = new_project(service, proxy.endpoint, "--check", "never")
    for token in (always, never):
        pull(service, token, "through/moving:v1", tmp_path / f"first-{token[-6:]}")
        (cache,) = caches_of(service, token)
        assert wait_available(service, token, str(cache["name"]))["status"] == "Available"
    moved = push_image(upstream.url, "through/moving", "v1", [make_layer(seed=5151)])
    assert moved.manifest_digest != first.manifest_digest
    proxy.clear()
    pull(service, always, "through/moving:v1", tmp_path / "always")
    assert_pulled(tmp_path / "always", moved)
    assert len(caches_of(service, always)) == 2  # the old content stays, as its own cache
    assert proxy.seen("/manifests/v1", method="HEAD")
    proxy.clear()
    pull(service, never, "through/moving:v1", tmp_path / "never")
    assert_pulled(tmp_path / "never", first)
    assert proxy.seen("/manifests/v1") == []


def test_upstreams_api_manages_what_a_project_pulls_through(service: Service) -> None:
    token = service.credential(f"pt-api-{next(_projects)}")
    other = service.credential(f"pt-api-{next(_projects)}")
    reader = service.credential(f"pt-api-{next(_projects)}", "reader")
    with service.client(token) as client:
        created = client.post(
            "/v5/upstreams",
            json={
                "registry": "quay.io",
                "mirrors": ["mirror.example.com:5000"],
                "check": "if-older-than=30m",
            },
        )
        assert created.status_code == 201, created.text
        assert created.json()["upstream"]["check"] == "if-older-than=30m"
        again = client.post("/v5/upstreams", json={"registry": "quay.io", "check": "never"})
        assert again.status_code == 200
        assert client.get("/v5/upstreams/quay.io").json()["upstream"]["check"] == "never"
        listed = client.get("/v5/upstreams").json()["upstreams"]
        assert [u["registry"] for u in listed] == ["quay.io"]
        for body, field in (
            ({"registry": "https://quay.io/v2"}, "registry"),
            ({"registry": "quay.io", "check": "sometimes"}, "check"),
            ({"registry": "quay.io", "check": "if-older-than=0s"}, "check"),
            ({"registry": "quay.io", "pull_secret": "default:missing"}, "pull_secret"),
            ({"registry": "quay.io", "mirrors": ["a/b"]}, "mirrors[0]"),
            ({"registry": "quay.io", "plain_http": "yes"}, "plain_http"),
            ({"registry": "quay.io", "colour": "red"}, "colour"),
            ({}, "registry"),
        ):
            refused = client.post("/v5/upstreams", json=body)
            assert refused.status_code == 400, (body, refused.text)
            assert field in refused.json()["error_msg"], (body, refused.text)
        assert client.get("/v5/upstreams/quay.io").json()["upstream"]["check"] == "never"
    with service.client(other) as client:
        assert client.get("/v5/upstreams").json()["upstreams"] == []
        assert client.get("/v5/upstreams/quay.io").status_code == 404
        assert client.delete("/v5/upstreams/quay.io").status_code == 404
    with service.client(reader) as client:
        assert client.get("/v5/upstreams").status_code == 200
        assert client.post("/v5/upstreams", json={"registry": "quay.io"}).status_code == 403
    with service.client(token) as client:
        assert client.delete("/v5/upstreams/quay.io").status_code == 200
        assert client.get("/v5/upstreams").json()["upstreams"] == []
    listed_cli = service.cli(
        "upstreams",
        "list",
        "--data-dir",
        str(service.data_dir),
        "--project",
        "no-such",
        check=False,
    )
    assert listed_cli.returncode != 0
    assert "no-such" in listed_cli.stderr


def test_anonymous_pullers_get_404_for_what_a_visible_repository_lacks(
    service: Service, upstream: RegistryServer
) -> None:
    push_image(upstream.url, "through/public", "v1", [make_layer(seed=5160)])
    project = f"pt-anon-{next(_projects)}"
    token = service.credential(project)
    with service.client(token) as client:
        created = client.post(
            "/v5/imagecaches",
            json={"name": "anon-public", "images": [f"{upstream.endpoint}/through/public:v1"]},
        )
        assert created.status_code == 201, created.text
        done = wait_for_status(client, created.json()["image_cache"]["id"], {"Available", "Failed"})
    assert done["status"] == "Available"
    service.set_anonymous_pull(project, True)
    try:
        registry = f"http://127.0.0.1:{service.registry_port}"
        missing = "sha256:" + "0" * 64
        blob = httpx.get(f"{registry}/v2/through/public/blobs/{missing}")
        assert blob.status_code == 404
        assert blob.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
        hidden = httpx.get(f"{registry}/v2/nobody/knows/blobs/{missing}")
        assert hidden.status_code == 401  # a repository it cannot see: authenticate
        empty = httpx.get(f"{registry}/token", auth=("", ""))
        assert empty.status_code == 200, empty.text
        assert httpx.get(f"{registry}/token", auth=("someone", "")).status_code == 200
    finally:
        service.set_anonymous_pull(project, False)


def test_a_quota_evicts_the_least_recently_pulled_caches_never_pinned_ones(
    service: Service, upstream: RegistryServer, tmp_path: Path
) -> None:
    images = {
        name: push_image(upstream.url, f"through/{name}", "v1", [make_layer(size, seed=seed)])
        for name, size, seed in (
            ("kept", 200_000, 5170),
            ("old", 200_000, 5171),
            ("new", 200_000, 5172),
            ("huge", 600_000, 5173),
        )
    }
    project, token = new_project(service, upstream.endpoint)
    quota_gib = 0.0005  # 536,870 bytes: room for two of the small images
    service.cli(
        "projects",
        "set-quota",
        "--data-dir",
        str(service.data_dir),
        "--project",
        project,
        "--stored-gib",
        str(quota_gib),
    )
    names = {}
    for name in ("kept", "old"):
        pull(service, token, f"through/{name}:v1", tmp_path / name)
        (names[name],) = [
            str(c["name"]) for c in caches_of(service, token) if f"-{name}-" in str(c["name"])
        ]
        assert wait_available(service, token, names[name])["status"] == "Available"
    pinned = httpx.patch(
        f"{service.url}/apis/cci/v2/imagesnapshots/{names['kept']}",
        json={"metadata": {"labels": {"imagedepot.io/pinned": "true"}}},
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/merge-patch+json",
        },
    )
    assert pinned.status_code == 200, pinned.text

    pull(service, token, "through/new:v1", tmp_path / "new")
    assert_pulled(tmp_path / "new", images["new"])
    statuses = {str(c["name"]): c["status"] for c in caches_of(service, token)}
    assert statuses.get(names["old"]) in (None, "Deleting"), statuses  # evicted
    assert statuses[names["kept"]] == "Available"  # pinned, though pulled longest ago
    audit = service.cli(
        "audit", "--data-dir", str(service.data_dir), "--project", project, "--json"
    )
    assert "system:imageCache:evict" in audit.stdout

    refused = registry_get(
        service,
        token,
        "/v2/through/huge/manifests/v1",
        Accept="application/vnd.oci.image.manifest.v1+json",
    )
    assert refused.status_code == 403, refused.text
    assert "quota exceeded" in refused.text
    assert "pinned: " + names["kept"] in refused.text
    after = {str(c["name"]): c["status"] for c in caches_of(service, token)}
    new_name = next(name for name in after if "-new-" in name)
    assert after[new_name] in ("Available", "Creating")  # nothing evicted for a refusal
    assert not any("-huge-" in name for name in after)
