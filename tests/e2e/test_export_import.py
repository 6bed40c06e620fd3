"""Air-gapped transfer end to end: `imagedepot export` writes an OCI layout (directory or tar)
that skopeo reads with identical digests, and `imagedepot import` makes a new cache of it on
another imagedepot, which then serves the same bytes on its registry port."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.images import PushedImage, make_layer, make_layers, push_image, push_index
from tests.support.registry import RegistryServer, require_binary
from tests.support.service import Service, wait_for_status

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[Service]:
    """A second imagedepot, on the far side of the air gap."""
    with Service() as running:
        yield running


def skopeo_copy(source: str, layout: Path, *extra: str) -> None:
    result = subprocess.run(
        [
            require_binary("/usr/bin/skopeo"),
            "--override-os",
            "linux",
            "--override-arch",
            "amd64",
            "copy",
            "--quiet",
            *extra,
            source,
            f"oci:{layout}:copied",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def assert_layout_holds(layout: Path, pushed: PushedImage) -> None:
    index = json.loads((layout / "index.json").read_text())
    assert [entry["digest"] for entry in index["manifests"]] == [pushed.manifest_digest]
    held = {"sha256:" + path.name for path in (layout / "blobs" / "sha256").iterdir()}
    assert held == {pushed.manifest_digest, *pushed.blob_digests}
    manifest = layout / "blobs" / "sha256" / pushed.manifest_digest.removeprefix("sha256:")
    assert manifest.read_bytes() == pushed.manifest


def test_export_then_skopeo_and_import_round_trip(
    service: Service, elsewhere: Service, registry: RegistryServer, tmp_path: Path
) -> None:
    app = push_image(registry.url, "export/app", "v1", make_layers(2, seed=2000))
    index = push_index(
        registry.url,
        "export/multi",
        "v2",
        {"linux/amd64": [make_layer(seed=2001)], "linux/arm64": [make_layer(seed=2002)]},
    )
    images = [f"{registry.endpoint}/export/app:v1", f"{registry.endpoint}/export/multi:v2"]
    token = service.credential("export")
    with service.client(token) as client:
        created = client.post("/v5/imagecaches", json={"name": "to-export", "images": images})
        cache_id = created.json()["image_cache"]["id"]
        assert wait_for_status(client, cache_id, {"Available", "Failed"})["status"] == "Available"

    data_dir = str(service.data_dir)
    layout, archive = tmp_path / "layout", tmp_path / "cache.tar"
    exported = service.cli("export", cache_id, "--data-dir", data_dir, "--oci-layout", str(layout))
    assert app.manifest_digest in exported.stdout
    service.cli(
        "export",
        "to-export",
        "--project",
        "export",
        "--data-dir",
        data_dir,
        "--oci-archive",
        str(archive),
    )
    for source in (f"oci:{layout}", f"oci-archive:{archive}"):
        skopeo_copy(f"{source}:{images[0]}", tmp_path / "app")
        assert_layout_holds(tmp_path / "app", app)
        skopeo_copy(f"{source}:{images[1]}", tmp_path / "multi")
        assert_layout_holds(tmp_path / "multi", index.images["linux/amd64"])
        for copied in ("app", "multi"):
            shutil.rmtree(tmp_path / copied)

    elsewhere_token = elsewhere.credential("imported")
    imported = elsewhere.cli(
        "import",
        "--data-dir",
        str(elsewhere.data_dir),
        "--project",
        "imported",
        "--name",
        "from-archive",
        "--oci-archive",
        str(archive),
    )
    new_id = imported.stdout.split()[0]
    with elsewhere.client(elsewhere_token) as client:
        shown = client.get(f"/v5/imagecaches/{new_id}").json()["image_cache"]
        assert shown["status"] == "Available"
        assert shown["images"] == images
        progress = client.get(f"/v5/imagecaches/{new_id}/progress").json()
        assert [image["digest"] for image in progress["images"]] == [
            app.manifest_digest,
            index.digest,
        ]
    served = f"docker://127.0.0.1:{elsewhere.registry_port}"
    creds = ("--src-tls-verify=false", "--src-creds", f"x:{elsewhere_token}")
    skopeo_copy(f"{served}/export/app:v1", tmp_path / "app", *creds)
    assert_layout_holds(tmp_path / "app", app)
    skopeo_copy(f"{served}/export/multi:v2", tmp_path / "multi", *creds)
    assert_layout_holds(tmp_path / "multi", index.images["linux/amd64"])

    again = elsewhere.cli(
        "import",
        "--data-dir",
        str(elsewhere.data_dir),
        "--project",
        "imported",
        "--name",
        "from-layout",
        "--oci-layout",
        str(layout),
    )
    assert "Available" in again.stdout


def test_a_damaged_layout_is_refused_and_leaves_nothing(
    service: Service, elsewhere: Service, registry: RegistryServer, tmp_path: Path
) -> None:
    pushed = push_image(registry.url, "export/damaged", "1", [make_layer(seed=2100)])
    token = service.credential("export-damaged")
    image = f"{registry.endpoint}/export/damaged:1"
    with service.client(token) as client:
        created = client.post("/v5/imagecaches", json={"name": "damaged", "images": [image]})
        cache_id = created.json()["image_cache"]["id"]
        assert wait_for_status(client, cache_id, {"Available", "Failed"})["status"] == "Available"
    layout = tmp_path / "layout"
    service.cli(
        "export", cache_id, "--data-dir", str(service.data_dir), "--oci-layout", str(layout)
    )
    layer = layout / "blobs" / "sha256" / pushed.layer_digests[0].removeprefix("sha256:")
    data = bytearray(layer.read_bytes())
    data[100] ^= 0xFF
    layer.write_bytes(bytes(data))

    elsewhere_token = elsewhere.credential("imported-damaged")
    refused = elsewhere.cli(
        "import",
        "--data-dir",
        str(elsewhere.data_dir),
        "--project",
        "imported-damaged",
        "--name",
        "damaged",
        "--oci-layout",
        str(layout),
        check=False,
    )
    assert refused.returncode != 0
    assert pushed.layer_digests[0] in refused.stderr
    with elsewhere.client(elsewhere_token) as client:
        assert client.get("/v5/imagecaches").json()["image_caches"] == []
    # Nothing of the refused import stays behind, not even the blobs that were intact.
    assert not set(pushed.blob_digests) & elsewhere.stored_digests()
    missing = elsewhere.cli(
        "export",
        "no-such-cache",
        "--data-dir",
        str(elsewhere.data_dir),
        "--oci-layout",
        str(tmp_path / "none"),
        check=False,
    )
    assert missing.returncode != 0
    assert "not found" in missing.stderr


def test_an_import_counts_against_the_project_quotas(
    service: Service, registry: RegistryServer, tmp_path: Path
) -> None:
    pushed = push_image(registry.url, "export/quota", "1", [make_layer(seed=2200)])
    token = service.credential("export-quota")
    with service.client(token) as client:
        created = client.post(
            "/v5/imagecaches",
            json={"name": "quota", "images": [f"{registry.endpoint}/export/quota:1"]},
        )
        cache_id = created.json()["image_cache"]["id"]
        assert wait_for_status(client, cache_id, {"Available", "Failed"})["status"] == "Available"
    layout = tmp_path / "layout"
    service.cli(
        "export", cache_id, "--data-dir", str(service.data_dir), "--oci-layout", str(layout)
    )
    with Service(env={"IMAGEDEPOT_QUOTA_CACHES": "1"}) as small:
        small_token = small.credential("quota-team")

        def import_as(name: str) -> subprocess.CompletedProcess[str]:
            return small.cli(
                "import",
                "--data-dir",
                str(small.data_dir),
                "--project",
                "quota-team",
                "--name",
                name,
                "--oci-layout",
                str(layout),
                check=False,
            )

        assert import_as("first").returncode == 0
        stored = small.stored_digests()
        refused = import_as("second")
        assert refused.returncode != 0
        assert "quota exceeded" in refused.stderr
        assert small.stored_digests() == stored
        with small.client(small_token) as client:
            names = [c["name"] for c in client.get("/v5/imagecaches").json()["image_caches"]]
        assert names == ["first"]
    assert pushed.manifest_digest in stored
