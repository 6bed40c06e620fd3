"""OCI and Docker v2 manifests: which media types exist, and which blobs a manifest names.

Parsing is pure: the builder hands in bytes fetched from a registry and gets back
the descriptors it must fetch next, with platforms filtered the way the server
is configured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from imagedepot.domain.references import DIGEST_RE

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_TYPES
ACCEPT_MANIFESTS = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
ALL_PLATFORMS = "all"


class ManifestError(ValueError):
    """A manifest that cannot be used: bad JSON, unknown media type, bad descriptor."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: str | None = None


@dataclass(frozen=True)
class ParsedManifest:
    media_type: str
    children: tuple[Descriptor, ...]
    """For an index: the platform manifests. For an image manifest: config first, then layers."""

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def parse_manifest(body: bytes, content_type: str | None) -> ParsedManifest:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"manifest is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ManifestError("manifest is not a JSON object")
    media_type = document.get("mediaType") or _strip_params(content_type)
    if media_type not in MANIFEST_TYPES:
        if "manifests" in document:
            media_type = OCI_INDEX
        elif "layers" in document and "config" in document:
            media_type = OCI_MANIFEST
        else:
            raise ManifestError(f"unsupported manifest media type {media_type!r}")
    if media_type in INDEX_TYPES:
        entries = document.get("manifests")
        if not isinstance(entries, list):
            raise ManifestError("index has no 'manifests' list")
        children = tuple(_descriptor(entry, with_platform=True) for entry in entries)
    else:
        config = document.get("config")
        layers = document.get("layers")
        if not isinstance(layers, list):
            raise ManifestError("manifest has no 'layers' list")
        children = (_descriptor(config), *(_descriptor(layer) for layer in layers))
    return ParsedManifest(media_type=media_type, children=children)


def _strip_params(content_type: str | None) -> str | None:
    return content_type.split(";", 1)[0].strip() if content_type else None


def _descriptor(entry: object, *, with_platform: bool = False) -> Descriptor:
    if not isinstance(entry, dict):
        raise ManifestError("descriptor is not an object")
    digest = entry.get("digest")
    size = entry.get("size")
    media_type = entry.get("mediaType", "")
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise ManifestError(f"descriptor has an unsupported digest {digest!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ManifestError(f"descriptor {digest} has an invalid size {size!r}")
    platform = _platform(entry.get("platform")) if with_platform else None
    return Descriptor(media_type=str(media_type), digest=digest, size=size, platform=platform)


def _platform(value: object) -> str | None:
    if not isinstance(value, dict):
        return None
    parts = [str(value.get("os", "")), str(value.get("architecture", ""))]
    if value.get("variant"):
        parts.append(str(value["variant"]))
    return "/".join(parts)


def select_platforms(index: ParsedManifest, wanted: tuple[str, ...]) -> tuple[Descriptor, ...]:
    """The manifests of `index` whose platform is wanted (`all` keeps every one).

    A wanted `linux/arm64` matches `linux/arm64/v8` too, as container runtimes do.
    """
    if ALL_PLATFORMS in wanted:
        return index.children
    chosen = []
    for child in index.children:
        if child.platform is None:
            continue
        if any(child.platform == w or child.platform.startswith(w + "/") for w in wanted):
            chosen.append(child)
    return tuple(chosen)
