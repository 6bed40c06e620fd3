"""Fetching what is attached to an image when it is cached: the upstream's referrers API,
and the tags cosign and the OCI fallback schema write (`sha256-<hex>`, `.sig`, `.att`,
`.sbom`), so signatures, attestations and SBOMs travel with the image. Best effort: an
upstream that has none, or cannot say, leaves the image cached without them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from imagedepot.domain.manifests import Descriptor, ManifestError, parse_manifest
from imagedepot.domain.references import ImageReference
from imagedepot.domain.referrers import attached_tags
from imagedepot.ports import FetchedManifest, RegistryClient, RegistryError, Transport

log = logging.getLogger(__name__)
MAX_REFERRERS = 64
"""At most this many referrers are kept per image (a signature pile-up must not stall a build)."""


@dataclass
class Attached:
    manifests: list[FetchedManifest] = field(default_factory=list)
    blobs: list[Descriptor] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    """Fallback and cosign tags found upstream -> the manifest digest each names."""


async def fetch_attached(
    registry: RegistryClient, transport: Transport, image: ImageReference, subject: str
) -> Attached:
    attached = Attached()
    wanted: dict[str, None] = {}
    index = await registry.fetch_referrers(transport, image, subject)
    if index is not None:
        wanted.update(dict.fromkeys(_children(index)))
    for tag in attached_tags(subject):
        try:
            fetched = await registry.fetch_manifest(transport, image, tag)
        except RegistryError:
            continue  # none under this tag (or the upstream cannot say): nothing to keep
        attached.tags[tag] = fetched.digest
        attached.manifests.append(fetched)
        try:
            parsed = parse_manifest(fetched.body, fetched.media_type)
        except ManifestError:
            continue
        if parsed.is_index:
            wanted.update(dict.fromkeys(child.digest for child in parsed.children))
        else:
            attached.blobs.extend(parsed.children)
    for digest in list(wanted)[:MAX_REFERRERS]:
        if any(m.digest == digest for m in attached.manifests):
            continue
        try:
            fetched = await registry.fetch_manifest(transport, image, digest)
            attached.manifests.append(fetched)
            parsed = parse_manifest(fetched.body, fetched.media_type)
        except (RegistryError, ManifestError) as error:
            log.info("referrer %s of %s not kept: %s", digest, image, error)
            continue
        if not parsed.is_index:
            attached.blobs.extend(parsed.children)
    return attached


def _children(index: bytes) -> list[str]:
    try:
        parsed = parse_manifest(index, None)
    except ManifestError:
        return []
    return [child.digest for child in parsed.children] if parsed.is_index else []
