"""Signatures, attestations and SBOMs travel with a cached image: building a cache fetches
what is attached to each image (the upstream's referrers API, else the `sha256-<hex>` tag
schema and cosign's `.sig` tags), and the registry port serves them back through
`/v2/<name>/referrers/<digest>` (with `artifactType` filtering) and under the same tags.
Debian's docker-registry 2.8 has no referrers API, so the fallback schema is what is used."""

from __future__ import annotations

import json

import httpx

from tests.support.images import (
    _client,
    make_layer,
    push_blob,
    push_image,
    put_manifest,
    sha256_digest,
)
from tests.support.registry import RegistryServer
from tests.support.service import Service, wait_for_status

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
SBOM = "application/spdx+json"


def artifact(
    client: httpx.Client, repository: str, subject: dict[str, object], data: bytes
) -> bytes:
    """An OCI artifact manifest (an SBOM) whose subject is the image; its blobs pushed."""
    config = b"{}"
    push_blob(client, repository, config)
    push_blob(client, repository, data)
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SBOM,
        "config": {"mediaType": EMPTY, "digest": sha256_digest(config), "size": len(config)},
        "layers": [{"mediaType": SBOM, "digest": sha256_digest(data), "size": len(data)}],
        "subject": subject,
        "annotations": {"org.example.kind": "sbom"},
    }
    return json.dumps(document).encode()


def test_referrers_pushed_with_the_tag_schema_come_back_by_api_and_by_tag(
    service: Service, registry: RegistryServer
) -> None:
    pushed = push_image(registry.url, "signed/app", "v1", [make_layer(seed=5300)])
    subject = {
        "mediaType": pushed.media_type,
        "digest": pushed.manifest_digest,
        "size": len(pushed.manifest),
    }
    sbom_data = b'{"spdxVersion": "SPDX-2.3"}'
    with _client(registry.url, None, True) as client:
        sbom = artifact(client, "signed/app", subject, sbom_data)
        sbom_digest = put_manifest(client, "signed/app", sha256_digest(sbom), sbom, OCI_MANIFEST)
        fallback = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": sbom_digest,
                        "size": len(sbom),
                        "artifactType": SBOM,
                    }
                ],
            }
        ).encode()
        fallback_tag = pushed.manifest_digest.replace(":", "-")
        put_manifest(client, "signed/app", fallback_tag, fallback, OCI_INDEX)
        # cosign's own schema: a signature manifest under sha256-<hex>.sig
        signature = artifact(client, "signed/app", subject, b"not really a signature")
        put_manifest(client, "signed/app", f"{fallback_tag}.sig", signature, OCI_MANIFEST)

    token = service.credential("referrers-team")
    with service.client(token) as api:
        created = api.post(
            "/v5/imagecaches",
            json={"name": "signed", "images": [f"{registry.endpoint}/signed/app:v1"]},
        )
        assert created.status_code == 201, created.text
        done = wait_for_status(api, created.json()["image_cache"]["id"], {"Available", "Failed"})
    assert done["status"] == "Available", done

    base = f"http://127.0.0.1:{service.registry_port}/v2/signed/app"
    bearer = {"Authorization": f"Bearer {token}"}
    listed = httpx.get(f"{base}/referrers/{pushed.manifest_digest}", headers=bearer)
    assert listed.status_code == 200, listed.text
    assert listed.headers["content-type"].startswith(OCI_INDEX)
    entries = {entry["digest"]: entry for entry in listed.json()["manifests"]}
    assert set(entries) == {sbom_digest, sha256_digest(signature)}
    assert entries[sbom_digest]["artifactType"] == SBOM
    assert entries[sbom_digest]["annotations"] == {"org.example.kind": "sbom"}
    assert entries[sbom_digest]["size"] == len(sbom)

    filtered = httpx.get(
        f"{base}/referrers/{pushed.manifest_digest}",
        params={"artifactType": "application/vnd.dev.cosign.simplesigning.v1+json"},
        headers=bearer,
    )
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert filtered.json()["manifests"] == []

    accept = {**bearer, "Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"}
    by_tag = httpx.get(f"{base}/manifests/{fallback_tag}", headers=accept)
    assert by_tag.status_code == 200
    assert by_tag.content == fallback
    sig = httpx.get(f"{base}/manifests/{fallback_tag}.sig", headers=accept)
    assert sig.content == signature
    by_digest = httpx.get(f"{base}/manifests/{sbom_digest}", headers=accept)
    assert by_digest.content == sbom
    blob = httpx.get(f"{base}/blobs/{sha256_digest(sbom_data)}", headers=bearer)
    assert blob.content == sbom_data

    # Another project sees none of it, and a digest nobody holds has no referrers.
    other = service.credential("referrers-other")
    hidden = httpx.get(
        f"{base}/referrers/{pushed.manifest_digest}",
        headers={"Authorization": f"Bearer {other}"},
    )
    assert hidden.status_code == 404
    unknown = httpx.get(f"{base}/referrers/sha256:{'1' * 64}", headers=bearer)
    assert unknown.status_code == 200
    assert unknown.json()["manifests"] == []
    bad = httpx.get(f"{base}/referrers/sha256:xyz", headers=bearer)
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["code"] == "DIGEST_INVALID"
