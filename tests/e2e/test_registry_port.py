"""The registry port end to end: a real `imagedepot serve` serving its caches to skopeo, with a
real docker-registry as the upstream the caches were built from."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.commands import run_command
from tests.support.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    PushedImage,
    make_layer,
    make_layers,
    push_image,
    push_index,
    sha256_digest,
)
from tests.support.registry import RegistryServer, require_binary
from tests.support.service import Service, wait_for_status

pytestmark = pytest.mark.peers

SKOPEO = "/usr/bin/skopeo"
_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def build_cache(service: Service, token: str, images: list[str]) -> dict[str, Any]:
    with service.client(token) as client:
        created = client.post("/v5/imagecaches", json={"name": unique("reg"), "images": images})
        assert created.status_code == 201, created.text
        cache_id = created.json()["image_cache"]["id"]
        done = wait_for_status(client, cache_id, {"Available", "Failed"})
    assert done["status"] == "Available", done
    return done


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [require_binary(SKOPEO), "--override-os", "linux", "--override-arch", "amd64"]
    return run_command([*command, *args], check=check)


def copy_to_layout(
    service: Service, source: str, layout: Path, *extra: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return skopeo(
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        *extra,
        f"docker://127.0.0.1:{service.registry_port}/{source}",
        f"oci:{layout}:pulled",
        check=check,
    )


def layout_manifest_digest(layout: Path) -> str:
    index = json.loads((layout / "index.json").read_text())
    (entry,) = index["manifests"]
    digest: str = entry["digest"]
    return digest


def layout_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def layout_digests(layout: Path) -> set[str]:
    return {"sha256:" + path.name for path in (layout / "blobs" / "sha256").iterdir()}


def assert_same_image(layout: Path, pushed: PushedImage) -> None:
    assert layout_manifest_digest(layout) == pushed.manifest_digest
    assert layout_blob(layout, pushed.manifest_digest) == pushed.manifest
    assert layout_digests(layout) == {pushed.manifest_digest, *pushed.blob_digests}
    for digest in layout_digests(layout):
        assert sha256_digest(layout_blob(layout, digest)) == digest


def basic(token: str, username: str = "anyone") -> dict[str, str]:
    encoded = base64.b64encode(f"{username}:{token}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


@dataclass(frozen=True)
class Project:
    name: str
    token: str
    pushed: PushedImage
    cache: dict[str, Any]


@pytest.fixture(scope="module")
def alpha(service: Service, registry: RegistryServer) -> Project:
    """A private project with `team/app:v1` cached from the upstream."""
    pushed = push_image(registry.url, "team/app", "v1", make_layers(2, seed=1000))
    token = service.credential("reg-alpha")
    cache = build_cache(service, token, [f"{registry.endpoint}/team/app:v1"])
    return Project("reg-alpha", token, pushed, cache)


@pytest.fixture(scope="module")
def beta(service: Service, registry: RegistryServer) -> Project:
    """Another private project, with a different image under the same name `team/app`."""
    pushed = push_image(registry.url, "team/app", "v9", [make_layer(seed=1100)])
    token = service.credential("reg-beta")
    cache = build_cache(service, token, [f"{registry.endpoint}/team/app:v9"])
    return Project("reg-beta", token, pushed, cache)


@pytest.fixture
def registry_client(service: Service) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{service.registry_port}", timeout=30) as client:
        yield client


def errors(response: httpx.Response) -> list[str]:
    return [error["code"] for error in response.json()["errors"]]


# --- pulls with skopeo --------------------------------------------------------------------


def test_skopeo_copies_by_tag_and_by_digest_exactly_what_was_pushed(
    service: Service, alpha: Project, tmp_path: Path
) -> None:
    creds = ("--src-creds", f"whoever:{alpha.token}")
    copy_to_layout(service, "team/app:v1", tmp_path / "by-tag", *creds)
    assert_same_image(tmp_path / "by-tag", alpha.pushed)

    by_digest = f"team/app@{alpha.pushed.manifest_digest}"
    copy_to_layout(service, by_digest, tmp_path / "by-digest", *creds)
    assert_same_image(tmp_path / "by-digest", alpha.pushed)


def test_docker_v2_images_keep_their_media_types(
    service: Service, registry: RegistryServer, tmp_path: Path
) -> None:
    pushed = push_image(registry.url, "legacy/app", "2", [make_layer(seed=1200)], oci=False)
    token = service.credential(unique("reg-docker"))
    build_cache(service, token, [f"{registry.endpoint}/legacy/app:2"])
    registry_url = f"http://127.0.0.1:{service.registry_port}"
    response = httpx.get(
        f"{registry_url}/v2/legacy/app/manifests/2",
        headers={"Authorization": f"Bearer {token}", "Accept": pushed.media_type},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == pushed.media_type
    assert response.content == pushed.manifest

    skopeo(
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--src-creds",
        f"x:{token}",
        f"docker://127.0.0.1:{service.registry_port}/legacy/app:2",
        f"dir:{tmp_path / 'dir'}",
    )
    assert (tmp_path / "dir" / "manifest.json").read_bytes() == pushed.manifest


def test_an_index_without_all_gives_the_platform_manifest(
    service: Service, registry: RegistryServer, tmp_path: Path
) -> None:
    index = push_index(
        registry.url,
        "multi/web",
        "1",
        {"linux/amd64": [make_layer(seed=1300)], "linux/arm64": [make_layer(seed=1301)]},
    )
    token = service.credential(unique("reg-index"))
    build_cache(service, token, [f"{registry.endpoint}/multi/web:1"])
    copy_to_layout(service, "multi/web:1", tmp_path / "layout", "--src-creds", f"x:{token}")
    assert_same_image(tmp_path / "layout", index.images["linux/amd64"])

    with httpx.Client(base_url=f"http://127.0.0.1:{service.registry_port}") as client:
        auth = {"Authorization": f"Bearer {token}"}
        as_index = client.get("/v2/multi/web/manifests/1", headers={**auth, "Accept": OCI_INDEX})
        assert as_index.headers["content-type"] == OCI_INDEX
        assert as_index.content == index.body
        assert as_index.headers["docker-content-digest"] == index.digest
        # a client that accepts no index gets the default platform's manifest, as registries do
        old = client.get("/v2/multi/web/manifests/1", headers={**auth, "Accept": OCI_MANIFEST})
        amd = index.images["linux/amd64"]
        assert old.content == amd.manifest
        assert old.headers["docker-content-digest"] == amd.manifest_digest


def test_an_index_with_all_copies_every_platform(registry: RegistryServer, tmp_path: Path) -> None:
    index = push_index(
        registry.url,
        "multi/all",
        "1",
        {"linux/amd64": [make_layer(seed=1400)], "linux/arm64": [make_layer(seed=1401)]},
    )
    with Service(env={"IMAGEDEPOT_PLATFORMS": "all"}) as service:
        token = service.credential("reg-all")
        build_cache(service, token, [f"{registry.endpoint}/multi/all:1"])
        copy_to_layout(
            service, "multi/all:1", tmp_path / "layout", "--all", "--src-creds", f"x:{token}"
        )
    layout = tmp_path / "layout"
    assert layout_manifest_digest(layout) == index.digest
    assert layout_blob(layout, index.digest) == index.body
    expected = {index.digest}
    for image in index.images.values():
        expected |= {image.manifest_digest, *image.blob_digests}
    assert layout_digests(layout) == expected


def test_a_cache_serves_while_its_upstream_is_down(service: Service, tmp_path: Path) -> None:
    with RegistryServer() as upstream:
        pushed = push_image(upstream.url, "down/app", "1", make_layers(2, seed=1500))
        token = service.credential(unique("reg-down"))
        build_cache(service, token, [f"{upstream.endpoint}/down/app:1"])
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{upstream.url}/v2/", timeout=2)
    copy_to_layout(service, "down/app:1", tmp_path / "layout", "--src-creds", f"x:{token}")
    assert_same_image(tmp_path / "layout", pushed)


# --- access -------------------------------------------------------------------------------


def test_a_private_cache_needs_the_token_flow(
    service: Service, alpha: Project, registry_client: httpx.Client, tmp_path: Path
) -> None:
    refused = copy_to_layout(service, "team/app:v1", tmp_path / "anonymous", check=False)
    assert refused.returncode != 0
    assert "unauthorized" in refused.stderr.lower() or "authentication" in refused.stderr.lower()

    ping = registry_client.get("/v2/")
    assert ping.status_code == 401
    assert errors(ping) == ["UNAUTHORIZED"]
    realm = f"http://127.0.0.1:{service.registry_port}/token"
    assert ping.headers["www-authenticate"] == f'Bearer realm="{realm}",service="imagedepot"'

    manifest = registry_client.get("/v2/team/app/manifests/v1")
    assert manifest.status_code == 401
    challenge = manifest.headers["www-authenticate"]
    assert challenge.startswith(f'Bearer realm="{realm}",service="imagedepot"')
    assert 'scope="repository:team/app:pull"' in challenge

    issued = registry_client.get(
        "/token",
        params={"service": "imagedepot", "scope": "repository:team/app:pull"},
        headers=basic(alpha.token),
    )
    assert issued.status_code == 200
    body = issued.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] > 0
    assert body["issued_at"].endswith("Z")
    assert alpha.token not in body["token"]
    bearer = {"Authorization": f"Bearer {body['token']}"}
    assert registry_client.get("/v2/", headers=bearer).status_code == 200
    pulled = registry_client.get("/v2/team/app/manifests/v1", headers=bearer)
    assert pulled.status_code == 200
    assert pulled.content == alpha.pushed.manifest

    wrong = registry_client.get("/token", headers=basic("idp_not-a-token"))
    assert wrong.status_code == 401
    assert errors(wrong) == ["UNAUTHORIZED"]
    forged = registry_client.get(
        "/v2/team/app/manifests/v1", headers={"Authorization": f"Bearer {body['token']}x"}
    )
    assert forged.status_code == 401
    assert 'error="invalid_token"' in forged.headers["www-authenticate"]

    copy_to_layout(
        service, "team/app:v1", tmp_path / "with-creds", "--src-creds", f"someone:{alpha.token}"
    )
    assert_same_image(tmp_path / "with-creds", alpha.pushed)


def test_containerd_style_password_grant(alpha: Project, registry_client: httpx.Client) -> None:
    issued = registry_client.post(
        "/token",
        data={
            "grant_type": "password",
            "username": "node",
            "password": alpha.token,
            "service": "imagedepot",
            "scope": "repository:team/app:pull",
        },
    )
    assert issued.status_code == 200
    bearer = {"Authorization": f"Bearer {issued.json()['access_token']}"}
    assert registry_client.head("/v2/team/app/manifests/v1", headers=bearer).status_code == 200
    refused = registry_client.post(
        "/token", data={"grant_type": "password", "username": "node", "password": "nope"}
    )
    assert refused.status_code == 401


def test_anonymous_pull_when_the_project_allows_it(
    service: Service, registry: RegistryServer, alpha: Project, tmp_path: Path
) -> None:
    pushed = push_image(registry.url, "mirror/base", "1", [make_layer(seed=1600)])
    token = service.credential("reg-mirror")
    build_cache(service, token, [f"{registry.endpoint}/mirror/base:1"])
    registry_url = f"http://127.0.0.1:{service.registry_port}"

    assert httpx.get(f"{registry_url}/v2/mirror/base/manifests/1").status_code == 401
    service.set_anonymous_pull("reg-mirror", True)
    try:
        direct = httpx.get(f"{registry_url}/v2/mirror/base/manifests/1")
        assert direct.status_code == 200
        assert direct.content == pushed.manifest
        copy_to_layout(service, "mirror/base:1", tmp_path / "anonymous")
        assert_same_image(tmp_path / "anonymous", pushed)
        # a private project stays private, and an anonymous token does not open it
        private = httpx.get(f"{registry_url}/v2/team/app/manifests/v1")
        assert private.status_code == 401
        assert errors(private) == ["UNAUTHORIZED"]
        blob = httpx.get(f"{registry_url}/v2/team/app/blobs/{alpha.pushed.config_digest}")
        assert blob.status_code == 401
        anonymous = httpx.get(f"{registry_url}/token").json()["token"]
        bearer = {"Authorization": f"Bearer {anonymous}"}
        assert httpx.get(f"{registry_url}/v2/", headers=bearer).status_code == 200
        assert (
            httpx.get(f"{registry_url}/v2/mirror/base/manifests/1", headers=bearer).status_code
            == 200
        )
        assert (
            httpx.get(f"{registry_url}/v2/team/app/manifests/v1", headers=bearer).status_code == 401
        )
        unknown_tag = httpx.get(f"{registry_url}/v2/mirror/base/manifests/2")
        assert unknown_tag.status_code == 404
        assert errors(unknown_tag) == ["MANIFEST_UNKNOWN"]
    finally:
        service.set_anonymous_pull("reg-mirror", False)
    assert httpx.get(f"{registry_url}/v2/mirror/base/manifests/1").status_code == 401
    missing = service.set_anonymous_pull("no-such-project", True, check=False)
    assert missing.returncode != 0
    assert "no-such-project" in missing.stderr


def test_another_projects_digests_are_unknown(
    alpha: Project, beta: Project, registry_client: httpx.Client
) -> None:
    as_beta = {"Authorization": f"Bearer {beta.token}"}
    own = registry_client.get("/v2/team/app/manifests/v9", headers=as_beta)
    assert own.status_code == 200
    assert own.content == beta.pushed.manifest
    assert registry_client.get("/v2/team/app/manifests/v1", headers=as_beta).status_code == 404

    manifest = registry_client.get(
        f"/v2/team/app/manifests/{alpha.pushed.manifest_digest}", headers=as_beta
    )
    assert manifest.status_code == 404
    assert errors(manifest) == ["MANIFEST_UNKNOWN"]
    for digest in alpha.pushed.blob_digests:
        blob = registry_client.get(f"/v2/team/app/blobs/{digest}", headers=as_beta)
        assert blob.status_code == 404
        assert errors(blob) == ["BLOB_UNKNOWN"]
    as_alpha = {"Authorization": f"Bearer {alpha.token}"}
    theirs = registry_client.get(
        f"/v2/team/app/blobs/{beta.pushed.layer_digests[0]}", headers=as_alpha
    )
    assert errors(theirs) == ["BLOB_UNKNOWN"]


# --- the HTTP surface ---------------------------------------------------------------------


def test_blobs_answer_head_range_and_etag(alpha: Project, registry_client: httpx.Client) -> None:
    auth = {"Authorization": f"Bearer {alpha.token}"}
    digest, size = alpha.pushed.layer_digests[0], alpha.pushed.layer_sizes[0]
    whole = registry_client.get(f"/v2/team/app/blobs/{digest}", headers=auth)
    assert whole.status_code == 200
    assert hashlib.sha256(whole.content).hexdigest() == digest.removeprefix("sha256:")
    assert whole.headers["docker-content-digest"] == digest
    assert whole.headers["etag"] == f'"{digest}"'
    assert whole.headers["accept-ranges"] == "bytes"

    head = registry_client.head(f"/v2/team/app/blobs/{digest}", headers=auth)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(size)
    assert head.headers["docker-content-digest"] == digest

    part = registry_client.get(
        f"/v2/team/app/blobs/{digest}", headers={**auth, "Range": "bytes=100-1099"}
    )
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-1099/{size}"
    assert part.content == whole.content[100:1100]
    tail = registry_client.get(
        f"/v2/team/app/blobs/{digest}", headers={**auth, "Range": "bytes=-10"}
    )
    assert tail.status_code == 206
    assert tail.content == whole.content[-10:]
    resumed = registry_client.get(
        f"/v2/team/app/blobs/{digest}", headers={**auth, "Range": f"bytes={size - 5}-"}
    )
    assert resumed.content == whole.content[-5:]
    past = registry_client.get(
        f"/v2/team/app/blobs/{digest}", headers={**auth, "Range": f"bytes={size}-"}
    )
    assert past.status_code == 416

    cached = registry_client.get(
        f"/v2/team/app/blobs/{digest}", headers={**auth, "If-None-Match": f'"{digest}"'}
    )
    assert cached.status_code == 304


def test_manifests_answer_head_with_digest_and_length(
    alpha: Project, registry_client: httpx.Client
) -> None:
    auth = {"Authorization": f"Bearer {alpha.token}"}
    for reference in ("v1", alpha.pushed.manifest_digest):
        head = registry_client.head(f"/v2/team/app/manifests/{reference}", headers=auth)
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == str(len(alpha.pushed.manifest))
        assert head.headers["docker-content-digest"] == alpha.pushed.manifest_digest
        assert head.headers["content-type"] == alpha.pushed.media_type


def test_names_with_the_upstream_host_and_in_mirror_mode(
    alpha: Project, registry: RegistryServer, registry_client: httpx.Client
) -> None:
    auth = {"Authorization": f"Bearer {alpha.token}"}
    full = registry_client.get(f"/v2/{registry.endpoint}/team/app/manifests/v1", headers=auth)
    assert full.status_code == 200
    assert full.content == alpha.pushed.manifest
    mirrored = registry_client.get(
        "/v2/team/app/manifests/v1", params={"ns": registry.endpoint}, headers=auth
    )
    assert mirrored.content == alpha.pushed.manifest
    elsewhere = registry_client.get(
        "/v2/team/app/manifests/v1", params={"ns": "quay.io"}, headers=auth
    )
    assert errors(elsewhere) == ["NAME_UNKNOWN"]
    assert errors(registry_client.get("/v2/app/manifests/v1", headers=auth)) == ["NAME_UNKNOWN"]


def test_the_newest_cache_wins_a_tag(service: Service, registry: RegistryServer) -> None:
    token = service.credential(unique("reg-newest"))
    first = push_image(registry.url, "newest/app", "v1", [make_layer(seed=1700)])
    build_cache(service, token, [f"{registry.endpoint}/newest/app:v1"])
    second = push_image(registry.url, "newest/app", "v1", [make_layer(seed=1701)])
    build_cache(service, token, [f"{registry.endpoint}/newest/app:v1"])
    url = f"http://127.0.0.1:{service.registry_port}/v2/newest/app/manifests"
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{url}/v1", headers=auth).content == second.manifest
    by_digest = httpx.get(f"{url}/{first.manifest_digest}", headers=auth)
    assert by_digest.content == first.manifest


def test_unknown_names_tags_and_digests(alpha: Project, registry_client: httpx.Client) -> None:
    auth = {"Authorization": f"Bearer {alpha.token}"}
    absent = "sha256:" + "0" * 64
    cases = [
        ("/v2/nobody/here/manifests/v1", 404, "NAME_UNKNOWN"),
        ("/v2/nobody/here/tags/list", 404, "NAME_UNKNOWN"),
        ("/v2/team/app/manifests/v404", 404, "MANIFEST_UNKNOWN"),
        (f"/v2/team/app/manifests/{absent}", 404, "MANIFEST_UNKNOWN"),
        (f"/v2/team/app/manifests/{alpha.pushed.config_digest}", 404, "MANIFEST_UNKNOWN"),
        (f"/v2/team/app/blobs/{absent}", 404, "BLOB_UNKNOWN"),
        ("/v2/team/app/blobs/sha256:abc", 400, "DIGEST_INVALID"),
        ("/v2/team/app/manifests/sha256:abc", 400, "DIGEST_INVALID"),
        ("/v2/Team/App/manifests/v1", 400, "NAME_INVALID"),
    ]
    for path, status, code in cases:
        response = registry_client.get(path, headers=auth)
        assert (response.status_code, errors(response)) == (status, [code]), path
        error = response.json()["errors"][0]
        assert error["message"]
        assert isinstance(error["detail"], dict)
    assert registry_client.head(f"/v2/team/app/blobs/{absent}", headers=auth).status_code == 404


def test_push_methods_are_unsupported(alpha: Project, registry_client: httpx.Client) -> None:
    auth = {"Authorization": f"Bearer {alpha.token}"}
    digest = alpha.pushed.layer_digests[0]
    for method, path in [
        ("PUT", "/v2/team/app/manifests/v2"),
        ("DELETE", f"/v2/team/app/manifests/{alpha.pushed.manifest_digest}"),
        ("POST", "/v2/team/app/blobs/uploads/"),
        ("PATCH", "/v2/team/app/blobs/uploads/0c8a4a17"),
        ("PUT", f"/v2/team/app/blobs/uploads/0c8a4a17?digest={digest}"),
        ("DELETE", f"/v2/team/app/blobs/{digest}"),
    ]:
        for headers in (auth, {}):
            response = registry_client.request(method, path, headers=headers, content=b"{}")
            assert response.status_code == 405, (method, path)
            assert errors(response) == ["UNSUPPORTED"]


def test_tags_list_pages_with_n_and_last(
    service: Service, registry: RegistryServer, registry_client: httpx.Client
) -> None:
    layer = make_layer(seed=1800)
    for tag in ("b", "a", "c"):
        push_image(registry.url, "paged/app", tag, [layer], label=tag)
    token = service.credential(unique("reg-tags"))
    build_cache(service, token, [f"{registry.endpoint}/paged/app:{tag}" for tag in "abc"])
    auth = {"Authorization": f"Bearer {token}"}

    everything = registry_client.get("/v2/paged/app/tags/list", headers=auth)
    assert everything.json() == {"name": "paged/app", "tags": ["a", "b", "c"]}
    assert "link" not in everything.headers
    first = registry_client.get("/v2/paged/app/tags/list", params={"n": 2}, headers=auth)
    assert first.json()["tags"] == ["a", "b"]
    assert first.headers["link"] == '</v2/paged/app/tags/list?last=b&n=2>; rel="next"'
    second = registry_client.get(
        "/v2/paged/app/tags/list", params={"n": 2, "last": "b"}, headers=auth
    )
    assert second.json()["tags"] == ["c"]
    assert "link" not in second.headers
    none = registry_client.get("/v2/paged/app/tags/list", params={"n": 0}, headers=auth)
    assert none.json()["tags"] == []
    bad = registry_client.get("/v2/paged/app/tags/list", params={"n": "many"}, headers=auth)
    assert bad.status_code == 400
    assert errors(bad) == ["PAGINATION_NUMBER_INVALID"]

    catalog = registry_client.get("/v2/_catalog", headers=auth)
    assert catalog.json() == {"repositories": ["paged/app"]}


def test_the_catalog_lists_only_the_projects_repositories(
    alpha: Project, beta: Project, registry_client: httpx.Client
) -> None:
    listed = registry_client.get("/v2/_catalog", headers={"Authorization": f"Bearer {alpha.token}"})
    assert listed.json() == {"repositories": ["team/app"]}


def test_a_pull_records_the_last_use(service: Service, alpha: Project, tmp_path: Path) -> None:
    copy_to_layout(service, "team/app:v1", tmp_path / "layout", "--src-creds", f"x:{alpha.token}")
    with service.client(alpha.token) as client:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            used = client.get(f"/v5/imagecaches/{alpha.cache['id']}/progress").json()
            if used["last_used_at"]:
                break
            time.sleep(0.05)
    assert used["last_used_at"] is not None
    assert used["last_used_at"].endswith("Z")
