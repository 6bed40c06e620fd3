"""Synthetic OCI / Docker v2 images built in test code and pushed to a real registry.

Layers are real gzip'd tar files with random content; configs, manifests and indexes
are real JSON documents. Nothing is downloaded: every byte is made here.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import random
import re
import ssl
import tarfile
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

KIB = 1024
GIB = 1024**3


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Layer:
    """A gzip'd tar layer held in memory (tests keep them small)."""

    data: bytes
    diff_id: str
    """sha256 of the uncompressed tar, as the image config lists it."""

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    @property
    def size(self) -> int:
        return len(self.data)


def make_layer(size: int = 100 * KIB, *, seed: int | None = None, name: str = "data.bin") -> Layer:
    """A layer holding one file of `size` random bytes (random data barely compresses)."""
    rng = random.Random(seed)
    payload = rng.randbytes(size)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o644
        info.mtime = 0
        tar.addfile(info, io.BytesIO(payload))
    raw = buffer.getvalue()
    return Layer(data=gzip.compress(raw, compresslevel=1, mtime=0), diff_id=sha256_digest(raw))


def make_layers(
    count: int,
    *,
    min_size: int = 50 * KIB,
    max_size: int = 300 * KIB,
    seed: int | None = None,
) -> list[Layer]:
    """`count` layers of random sizes in [min_size, max_size]; `seed` makes them repeatable."""
    rng = random.Random(seed)
    return [
        make_layer(rng.randint(min_size, max_size), seed=rng.getrandbits(64), name=f"layer{i}.bin")
        for i in range(count)
    ]


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class BuiltImage:
    """A manifest with its config and layers, not yet pushed."""

    manifest: bytes
    media_type: str
    config: Blob
    layers: tuple[Layer, ...]
    platform: str

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)


def _platform_dict(platform: str) -> dict[str, str]:
    parts = platform.split("/")
    if len(parts) not in (2, 3):
        raise ValueError(f"platform {platform!r} is not os/arch[/variant]")
    result = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        result["variant"] = parts[2]
    return result


def build_image(
    layers: Sequence[Layer],
    *,
    platform: str = "linux/amd64",
    oci: bool = True,
    claimed_sizes: Mapping[str, int] | None = None,
    label: str = "",
) -> BuiltImage:
    """An image config and manifest over `layers`.

    `claimed_sizes` maps a layer digest to the size its descriptor should claim (a lie, for
    size-budget tests); `label` changes the config so otherwise equal images differ.
    """
    config_document = {
        **_platform_dict(platform),
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Labels": {"imagedepot.test": label}},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "imagedepot tests"}]
        * len(layers),
    }
    config = Blob(
        json.dumps(config_document, sort_keys=True).encode(), OCI_CONFIG if oci else DOCKER_CONFIG
    )
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    layer_type = OCI_LAYER if oci else DOCKER_LAYER
    sizes = claimed_sizes or {}
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
        "layers": [
            {
                "mediaType": layer_type,
                "digest": layer.digest,
                "size": sizes.get(layer.digest, layer.size),
            }
            for layer in layers
        ],
    }
    return BuiltImage(
        manifest=json.dumps(document, indent=3).encode(),
        media_type=media_type,
        config=config,
        layers=tuple(layers),
        platform=platform,
    )


def build_index(images: Sequence[BuiltImage], *, oci: bool = True) -> Blob:
    """An OCI index (or Docker manifest list) over per-platform manifests."""
    media_type = OCI_INDEX if oci else DOCKER_LIST
    document = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            {
                "mediaType": image.media_type,
                "digest": image.digest,
                "size": len(image.manifest),
                "platform": _platform_dict(image.platform),
            }
            for image in images
        ],
    }
    return Blob(json.dumps(document, indent=3).encode(), media_type)


# --- pushing ------------------------------------------------------------------------------


class RegistryAuth(httpx.Auth):
    """Basic credentials that also answer a Bearer challenge by asking the token realm."""

    def __init__(self, username: str, password: str) -> None:
        encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._basic = f"Basic {encoded}"
        self._bearer: str | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._bearer:
            request.headers["Authorization"] = f"Bearer {self._bearer}"
        else:
            request.headers["Authorization"] = self._basic
        response = yield request
        challenge = response.headers.get("WWW-Authenticate", "")
        if response.status_code != 401 or not challenge.lower().startswith("bearer "):
            return
        params = _challenge_params(challenge)
        token_request = httpx.Request(
            "GET",
            params["realm"],
            params={k: v for k, v in params.items() if k in ("service", "scope")},
            headers={"Authorization": self._basic},
        )
        token_response = yield token_request
        token_response.read()
        if token_response.status_code != 200:
            return
        body = token_response.json()
        self._bearer = body.get("token") or body.get("access_token")
        request.headers["Authorization"] = f"Bearer {self._bearer}"
        yield request


def _challenge_params(challenge: str) -> dict[str, str]:
    _, _, rest = challenge.partition(" ")
    return {key.lower(): value for key, value in re.findall(r'(\w+)="([^"]*)"', rest)}


@dataclass(frozen=True)
class PushedImage:
    repository: str
    tag: str | None
    manifest_digest: str
    manifest: bytes
    media_type: str
    config_digest: str
    config_size: int
    layer_digests: tuple[str, ...]
    layer_sizes: tuple[int, ...]
    platform: str

    @property
    def blob_digests(self) -> tuple[str, ...]:
        """Config first, then layers, as a manifest lists them."""
        return (self.config_digest, *self.layer_digests)

    @property
    def total_size(self) -> int:
        return self.config_size + sum(self.layer_sizes)


@dataclass(frozen=True)
class PushedIndex:
    repository: str
    tag: str | None
    digest: str
    body: bytes
    media_type: str
    images: dict[str, PushedImage] = field(default_factory=dict)
    """Per platform (`linux/amd64` …)."""


def _client(
    registry_url: str, auth: tuple[str, str] | None, verify: ssl.SSLContext | bool
) -> httpx.Client:  # one client per push keeps the bearer token
    return httpx.Client(
        base_url=registry_url,
        auth=RegistryAuth(*auth) if auth else None,
        timeout=30.0,
        verify=verify,
    )


def push_blob(client: httpx.Client, repository: str, data: bytes) -> str:
    """Monolithic upload unless the registry already has the blob in `repository`."""
    digest = sha256_digest(data)
    if client.head(f"/v2/{repository}/blobs/{digest}").status_code == 200:
        return digest
    started = client.post(f"/v2/{repository}/blobs/uploads/")
    if started.status_code != 202:
        raise RuntimeError(f"upload start for {repository}: {started.status_code} {started.text}")
    location = started.headers["Location"]
    # Append by hand: httpx params= would replace the _state query the registry needs.
    location += ("&" if "?" in location else "?") + f"digest={digest}"
    finished = client.put(
        location, content=data, headers={"Content-Type": "application/octet-stream"}
    )
    if finished.status_code != 201:
        raise RuntimeError(f"upload of {digest}: {finished.status_code} {finished.text}")
    return digest


def put_manifest(
    client: httpx.Client, repository: str, reference: str, body: bytes, media_type: str
) -> str:
    response = client.put(
        f"/v2/{repository}/manifests/{reference}",
        content=body,
        headers={"Content-Type": media_type},
    )
    if response.status_code != 201:
        raise RuntimeError(
            f"manifest {repository}:{reference}: {response.status_code} {response.text}"
        )
    digest = sha256_digest(body)
    answered = response.headers.get("Docker-Content-Digest")
    if answered and answered != digest:
        raise RuntimeError(f"registry computed {answered} for a manifest whose sha256 is {digest}")
    return digest


def push_built(
    client: httpx.Client, repository: str, image: BuiltImage, tag: str | None
) -> PushedImage:
    for layer in image.layers:
        push_blob(client, repository, layer.data)
    push_blob(client, repository, image.config.data)
    put_manifest(client, repository, tag or image.digest, image.manifest, image.media_type)
    document = json.loads(image.manifest)
    return PushedImage(
        repository=repository,
        tag=tag,
        manifest_digest=image.digest,
        manifest=image.manifest,
        media_type=image.media_type,
        config_digest=image.config.digest,
        config_size=image.config.size,
        layer_digests=tuple(entry["digest"] for entry in document["layers"]),
        layer_sizes=tuple(entry["size"] for entry in document["layers"]),
        platform=image.platform,
    )


def push_image(
    registry_url: str,
    repository: str,
    tag: str | None,
    layers: Sequence[Layer],
    *,
    platform: str = "linux/amd64",
    oci: bool = True,
    auth: tuple[str, str] | None = None,
    claimed_sizes: Mapping[str, int] | None = None,
    label: str = "",
    verify: ssl.SSLContext | bool = True,
) -> PushedImage:
    """Push `layers`, a config and a manifest; tagged `tag`, or by digest only when None.

    Pass the same Layer objects to several pushes to share layers between images; pass
    `verify=registry.ssl_context()` for a TLS registry with a self-signed certificate.
    """
    image = build_image(
        layers, platform=platform, oci=oci, claimed_sizes=claimed_sizes, label=label
    )
    with _client(registry_url, auth, verify) as client:
        return push_built(client, repository, image, tag)


def push_index(
    registry_url: str,
    repository: str,
    tag: str | None,
    platforms: Mapping[str, Sequence[Layer]],
    *,
    oci: bool = True,
    auth: tuple[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
) -> PushedIndex:
    """Push one image per platform (by digest), then an index over them tagged `tag`."""
    images = [build_image(layers, platform=p, oci=oci) for p, layers in platforms.items()]
    index = build_index(images, oci=oci)
    with _client(registry_url, auth, verify) as client:
        pushed = {image.platform: push_built(client, repository, image, None) for image in images}
        put_manifest(client, repository, tag or index.digest, index.data, index.media_type)
    return PushedIndex(
        repository=repository,
        tag=tag,
        digest=index.digest,
        body=index.data,
        media_type=index.media_type,
        images=pushed,
    )
