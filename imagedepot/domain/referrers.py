"""Artifacts attached to an image (signatures, attestations, SBOMs), as the OCI referrers
API lists them and as the tag schemas name them when a registry has no such API.

A referrer is a manifest whose `subject` names the image's digest; the referrers API answers
an index of descriptors of them, each with its `artifactType` (the manifest's own, else its
config's media type) and annotations. Registries without the API keep that index under the
fallback tag `sha256-<hex>`; cosign writes its signatures, attestations and SBOMs under
`sha256-<hex>.sig`, `.att` and `.sbom`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from imagedepot.domain.manifests import OCI_INDEX

COSIGN_SUFFIXES = (".sig", ".att", ".sbom")


def fallback_tag(digest: str) -> str:
    """`sha256:abc…` -> `sha256-abc…`: the tag a referrers index lives under."""
    return digest.replace(":", "-", 1)


def attached_tags(digest: str) -> tuple[str, ...]:
    """Every tag an artifact attached to `digest` may live under."""
    base = fallback_tag(digest)
    return (base, *(base + suffix for suffix in COSIGN_SUFFIXES))


def referrer_descriptor(
    body: bytes, media_type: str, digest: str, subject: str
) -> dict[str, Any] | None:
    """The referrers-index entry for the manifest `body` when its subject is `subject`."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(document, dict):
        return None
    named = document.get("subject")
    if not isinstance(named, dict) or named.get("digest") != subject:
        return None
    config = document.get("config")
    artifact_type = document.get("artifactType") or (
        config.get("mediaType") if isinstance(config, dict) else None
    )
    descriptor: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(body)}
    if isinstance(artifact_type, str):
        descriptor["artifactType"] = artifact_type
    annotations = document.get("annotations")
    if isinstance(annotations, dict):
        descriptor["annotations"] = annotations
    return descriptor


def referrers_index(descriptors: Sequence[dict[str, Any]]) -> bytes:
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(descriptors)}
    return json.dumps(document, separators=(",", ":")).encode()
