"""The aiohttp registry client against a real docker-registry, directly and through faults."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from imagedepot.adapters.blobs.filesystem import FilesystemBlobStore
from imagedepot.adapters.registry.client import AiohttpRegistryClient
from imagedepot.domain.manifests import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    parse_manifest,
    select_platforms,
)
from imagedepot.domain.references import ImageReference, parse_reference
from imagedepot.ports import FetchedManifest, RegistryCredentials, RegistryError, Transport
from tests.support.faultproxy import FaultProxy
from tests.support.images import (
    KIB,
    PushedImage,
    PushedIndex,
    make_layer,
    make_layers,
    push_image,
    push_index,
)
from tests.support.ports import free_port
from tests.support.registry import RegistryServer
from tests.support.tokenserver import TokenServer

pytestmark = pytest.mark.peers

T = TypeVar("T")
USERS = {"alice": "wonderland"}


def intact(store: FilesystemBlobStore, digest: str) -> bool:
    """The stored bytes hash to their name."""
    with store.open(digest) as chunks:
        return "sha256:" + hashlib.sha256(b"".join(chunks)).hexdigest() == digest


def run(
    body: Callable[[AiohttpRegistryClient], Awaitable[T]],
    *,
    max_retries: int = 4,
    chunk_size: int = 1 << 20,
) -> T:
    """Run `body` with a fresh client (fast retries) on a fresh loop, closing the client."""

    async def main() -> T:
        client = AiohttpRegistryClient(
            max_retries=max_retries, retry_base_delay=0.01, chunk_size=chunk_size
        )
        try:
            return await body(client)
        finally:
            await client.close()

    return asyncio.run(main())


@dataclass
class Upstream:
    registry: RegistryServer
    image: PushedImage
    docker_image: PushedImage
    index: PushedIndex
    docker_index: PushedIndex

    def transport(self, endpoint: str | None = None) -> Transport:
        return Transport(endpoint=endpoint or self.registry.endpoint, plain_http=True)

    def ref(self, text: str) -> ImageReference:
        return parse_reference(f"{self.registry.endpoint}/{text}")


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with RegistryServer() as registry:
        shared = make_layers(2, seed=7)
        image = push_image(registry.url, "team/app", "v1", [*shared, make_layer(400 * KIB, seed=8)])
        docker_image = push_image(registry.url, "team/app", "docker", shared, oci=False)
        index = push_index(
            registry.url,
            "team/multi",
            "latest",
            {"linux/amd64": shared[:1], "linux/arm64/v8": make_layers(2, seed=9)},
        )
        docker_index = push_index(
            registry.url,
            "team/multi",
            "docker",
            {"linux/amd64": shared[1:], "linux/arm/v7": shared[:1]},
            oci=False,
        )
        yield Upstream(registry, image, docker_image, index, docker_index)


@pytest.fixture
def proxy(upstream: Upstream) -> Iterator[FaultProxy]:
    with FaultProxy(upstream.registry.url) as proxy:
        yield proxy


@pytest.fixture
def store(tmp_path: Path) -> FilesystemBlobStore:
    return FilesystemBlobStore(tmp_path / "blobs")


class Progress:
    def __init__(self) -> None:
        self.events: list[int] = []

    def __call__(self, count: int) -> None:
        self.events.append(count)

    @property
    def total(self) -> int:
        return sum(self.events)


async def fetch_into(
    client: AiohttpRegistryClient,
    transport: Transport,
    image: ImageReference,
    store: FilesystemBlobStore,
    digest: str,
    size: int | None,
    progress: Progress,
) -> None:
    writer = store.writer(digest, size)
    try:
        await client.fetch_blob(transport, image, digest, writer, progress)
    finally:
        writer.abort()


def error_of(call: Callable[[], object]) -> RegistryError:
    with pytest.raises(RegistryError) as caught:
        call()
    return caught.value


# --- manifests -------------------------------------------------------------------------------


def test_manifest_by_tag_and_by_digest(upstream: Upstream) -> None:
    pushed = upstream.image
    image = upstream.ref("team/app:v1")

    async def body(client: AiohttpRegistryClient) -> tuple[FetchedManifest, FetchedManifest]:
        by_tag = await client.fetch_manifest(upstream.transport(), image, "v1")
        by_digest = await client.fetch_manifest(upstream.transport(), image, pushed.manifest_digest)
        return by_tag, by_digest

    by_tag, by_digest = run(body)
    assert by_tag == FetchedManifest(pushed.manifest, OCI_MANIFEST, pushed.manifest_digest)
    assert by_digest == by_tag


def test_docker_v2_manifest_keeps_its_media_type(upstream: Upstream) -> None:
    fetched = run(
        lambda client: client.fetch_manifest(
            upstream.transport(), upstream.ref("team/app:docker"), "docker"
        )
    )
    assert fetched.media_type == DOCKER_MANIFEST
    assert fetched.digest == upstream.docker_image.manifest_digest


def test_index_then_platform_manifests(upstream: Upstream) -> None:
    image = upstream.ref("team/multi")

    async def body(client: AiohttpRegistryClient) -> tuple[FetchedManifest, list[FetchedManifest]]:
        index = await client.fetch_manifest(upstream.transport(), image, image.reference)
        parsed = parse_manifest(index.body, index.media_type)
        children = select_platforms(parsed, ("linux/arm64", "linux/amd64"))
        fetched = [
            await client.fetch_manifest(upstream.transport(), image, child.digest)
            for child in children
        ]
        return index, fetched

    index, children = run(body)
    assert index.media_type == OCI_INDEX
    assert index.digest == upstream.index.digest
    assert {child.digest for child in children} == {
        pushed.manifest_digest for pushed in upstream.index.images.values()
    }
    assert {child.media_type for child in children} == {OCI_MANIFEST}


def test_docker_manifest_list_and_its_manifests(upstream: Upstream) -> None:
    image = upstream.ref("team/multi:docker")

    async def body(client: AiohttpRegistryClient) -> tuple[FetchedManifest, FetchedManifest]:
        index = await client.fetch_manifest(upstream.transport(), image, "docker")
        parsed = parse_manifest(index.body, index.media_type)
        (arm,) = select_platforms(parsed, ("linux/arm",))
        return index, await client.fetch_manifest(upstream.transport(), image, arm.digest)

    index, arm = run(body)
    assert index.media_type == DOCKER_LIST
    assert index.body == upstream.docker_index.body
    assert arm.media_type == DOCKER_MANIFEST
    assert arm.digest == upstream.docker_index.images["linux/arm/v7"].manifest_digest


def test_manifest_whose_bytes_do_not_match_the_digest_is_corrupt(
    upstream: Upstream, proxy: FaultProxy
) -> None:
    digest = upstream.image.manifest_digest
    proxy.corrupt(f"/manifests/{digest}")
    error = error_of(
        lambda: run(
            lambda client: client.fetch_manifest(
                upstream.transport(proxy.endpoint), upstream.ref("team/app"), digest
            )
        )
    )
    assert error.kind == "corrupt"
    assert digest in error.message


def test_unknown_tag_repository_and_blob_are_not_found(
    upstream: Upstream, store: FilesystemBlobStore
) -> None:
    missing_digest = "sha256:" + "0" * 64

    async def manifest(client: AiohttpRegistryClient, text: str, reference: str) -> None:
        await client.fetch_manifest(upstream.transport(), upstream.ref(text), reference)

    tag = error_of(lambda: run(lambda c: manifest(c, "team/app:nope", "nope")))
    repository = error_of(lambda: run(lambda c: manifest(c, "team/ghost", "latest")))
    by_digest = error_of(lambda: run(lambda c: manifest(c, "team/app", missing_digest)))
    blob = error_of(
        lambda: run(
            lambda c: fetch_into(
                c,
                upstream.transport(),
                upstream.ref("team/app"),
                store,
                missing_digest,
                None,
                Progress(),
            )
        )
    )
    assert [e.kind for e in (tag, repository, by_digest, blob)] == ["not_found"] * 4
    assert tag.message == f"manifest unknown: {upstream.registry.endpoint}/team/app:nope"
    assert missing_digest in blob.message
    assert not store.has(missing_digest)


# --- blobs -----------------------------------------------------------------------------------


def test_blobs_stream_into_the_store_and_verify(
    upstream: Upstream, store: FilesystemBlobStore
) -> None:
    pushed = upstream.image
    image = upstream.ref("team/app:v1")
    sizes = dict(zip(pushed.layer_digests, pushed.layer_sizes, strict=True))
    sizes[pushed.config_digest] = pushed.config_size
    progress = Progress()

    async def body(client: AiohttpRegistryClient) -> None:
        await asyncio.gather(
            *(
                fetch_into(client, upstream.transport(), image, store, digest, size, progress)
                for digest, size in sizes.items()
            )
        )

    run(body, chunk_size=64 * KIB)
    for digest, size in sizes.items():
        assert store.size(digest) == size
        assert intact(store, digest)
    assert progress.total == pushed.total_size
    assert all(count > 0 for count in progress.events)


# --- authentication --------------------------------------------------------------------------


def test_htpasswd_registry_wants_the_right_credentials(store: FilesystemBlobStore) -> None:
    with RegistryServer(users=USERS) as registry:
        pushed = push_image(
            registry.url,
            "private/app",
            "v1",
            make_layers(1, seed=3),
            auth=next(iter(USERS.items())),
        )
        image = parse_reference(f"{registry.endpoint}/private/app:v1")

        def transport(credentials: RegistryCredentials | None) -> Transport:
            return Transport(registry.endpoint, plain_http=True, credentials=credentials)

        async def pull(
            client: AiohttpRegistryClient, credentials: RegistryCredentials | None
        ) -> FetchedManifest:
            fetched = await client.fetch_manifest(transport(credentials), image, "v1")
            digest = pushed.layer_digests[0]
            await fetch_into(
                client,
                transport(credentials),
                image,
                store,
                digest,
                pushed.layer_sizes[0],
                Progress(),
            )
            return fetched

        good = RegistryCredentials("alice", "wonderland")
        assert run(lambda c: pull(c, good)).digest == pushed.manifest_digest
        assert intact(store, pushed.layer_digests[0])
        wrong = error_of(lambda: run(lambda c: pull(c, RegistryCredentials("alice", "nope"))))
        anonymous = error_of(lambda: run(lambda c: pull(c, None)))

    assert wrong.kind == anonymous.kind == "unauthorized"
    assert registry.endpoint in wrong.message
    assert "private/app" in wrong.message


def test_token_auth_registry(store: FilesystemBlobStore) -> None:
    with TokenServer(USERS) as tokens, RegistryServer(token=tokens) as registry:
        pushed = push_image(
            registry.url, "private/tok", "v1", make_layers(2, seed=4), auth=("alice", "wonderland")
        )
        image = parse_reference(f"{registry.endpoint}/private/tok:v1")
        before = len(tokens.requests)

        def transport(credentials: RegistryCredentials | None) -> Transport:
            return Transport(registry.endpoint, plain_http=True, credentials=credentials)

        async def pull(
            client: AiohttpRegistryClient, credentials: RegistryCredentials | None
        ) -> FetchedManifest:
            # Blobs first and in parallel: they meet the challenge together.
            await asyncio.gather(
                *(
                    fetch_into(
                        client, transport(credentials), image, store, digest, size, Progress()
                    )
                    for digest, size in zip(pushed.layer_digests, pushed.layer_sizes, strict=True)
                )
            )
            return await client.fetch_manifest(transport(credentials), image, "v1")

        good = RegistryCredentials("alice", "wonderland")
        assert run(lambda c: pull(c, good)).digest == pushed.manifest_digest
        granted = tokens.requests[before:]
        # One token for the whole pull: it is cached per (registry, repository).
        assert [(r.account, r.scopes) for r in granted] == [
            ("alice", ("repository:private/tok:pull",))
        ]
        assert all(intact(store, d) for d in pushed.layer_digests)

        wrong = error_of(lambda: run(lambda c: pull(c, RegistryCredentials("alice", "nope"))))
        anonymous = error_of(lambda: run(lambda c: pull(c, None)))

    assert wrong.kind == anonymous.kind == "unauthorized"
    assert "private/tok" in anonymous.message


# --- faults ----------------------------------------------------------------------------------


def test_server_errors_are_retried(
    upstream: Upstream, proxy: FaultProxy, store: FilesystemBlobStore
) -> None:
    pushed = upstream.image
    digest, size = pushed.layer_digests[0], pushed.layer_sizes[0]
    proxy.status(f"/blobs/{digest}", 500, times=2)
    proxy.status("/manifests/v1", 503, times=1)
    proxy.status("/manifests/v1", 429, times=1, retry_after="0")
    image = upstream.ref("team/app:v1")
    transport = upstream.transport(proxy.endpoint)

    async def body(client: AiohttpRegistryClient) -> FetchedManifest:
        fetched = await client.fetch_manifest(transport, image, "v1")
        await fetch_into(client, transport, image, store, digest, size, Progress())
        return fetched

    assert run(body).digest == pushed.manifest_digest
    assert intact(store, digest)
    assert [r.status for r in proxy.seen(f"/blobs/{digest}")] == [500, 500, 200]
    assert [r.status for r in proxy.seen("/manifests/v1")] == [503, 429, 200]


def test_persistent_server_error_gives_up_as_upstream(
    upstream: Upstream, proxy: FaultProxy, store: FilesystemBlobStore
) -> None:
    digest, size = upstream.image.layer_digests[0], upstream.image.layer_sizes[0]
    proxy.status(f"/blobs/{digest}", 502, times=None)
    error = error_of(
        lambda: run(
            lambda c: fetch_into(
                c,
                upstream.transport(proxy.endpoint),
                upstream.ref("team/app"),
                store,
                digest,
                size,
                Progress(),
            ),
            max_retries=2,
        )
    )
    assert error.kind == "upstream"
    assert "502" in error.message
    assert len(proxy.seen(f"/blobs/{digest}")) == 3
    assert not store.has(digest)


@pytest.mark.parametrize("fault", ["reset", "truncate"])
def test_broken_download_resumes_with_range(
    upstream: Upstream, proxy: FaultProxy, store: FilesystemBlobStore, fault: str
) -> None:
    pushed = upstream.image
    digest, size = pushed.layer_digests[-1], pushed.layer_sizes[-1]
    if fault == "reset":
        proxy.reset_after(f"/blobs/{digest}", 150 * KIB)
    else:
        proxy.truncate(f"/blobs/{digest}", 150 * KIB)
    progress = Progress()
    run(
        lambda c: fetch_into(
            c,
            upstream.transport(proxy.endpoint),
            upstream.ref("team/app"),
            store,
            digest,
            size,
            progress,
        ),
        chunk_size=32 * KIB,
    )
    assert intact(store, digest)
    first, second = proxy.seen(f"/blobs/{digest}")
    assert first.range is None
    assert first.fault == fault
    assert second.range is not None
    assert second.status == 206
    resumed_at = int(second.range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= 150 * KIB
    assert progress.total == size
    assert all(count > 0 for count in progress.events)


def test_server_that_ignores_range_restarts_with_honest_progress(
    upstream: Upstream, proxy: FaultProxy, store: FilesystemBlobStore
) -> None:
    pushed = upstream.image
    digest, size = pushed.layer_digests[-1], pushed.layer_sizes[-1]
    proxy.reset_after(f"/blobs/{digest}", 100 * KIB)
    proxy.ignore_range(f"/blobs/{digest}")
    progress = Progress()
    run(
        lambda c: fetch_into(
            c,
            upstream.transport(proxy.endpoint),
            upstream.ref("team/app"),
            store,
            digest,
            size,
            progress,
        ),
        chunk_size=16 * KIB,
    )
    assert intact(store, digest)
    assert [r.status for r in proxy.seen(f"/blobs/{digest}")] == [0, 200]
    assert progress.total == size
    negative = [count for count in progress.events if count < 0]
    assert len(negative) == 1
    assert 0 < -negative[0] <= 100 * KIB


def test_corrupt_blob_is_retried_once_then_refused(
    upstream: Upstream, proxy: FaultProxy, store: FilesystemBlobStore
) -> None:
    pushed = upstream.image
    digest, size = pushed.layer_digests[1], pushed.layer_sizes[1]
    transport = upstream.transport(proxy.endpoint)
    image = upstream.ref("team/app")

    proxy.corrupt(f"/blobs/{digest}", times=2)
    progress = Progress()
    error = error_of(
        lambda: run(lambda c: fetch_into(c, transport, image, store, digest, size, progress))
    )
    assert error.kind == "corrupt"
    assert error.message.startswith(f"blob {digest} of {upstream.registry.endpoint}/team/app")
    assert not store.has(digest)
    assert list((store.root / "tmp").iterdir()) == []
    assert len(proxy.seen(f"/blobs/{digest}")) == 2
    assert progress.total == 0

    proxy.clear()
    proxy.corrupt(f"/blobs/{digest}", times=1)
    progress = Progress()
    run(lambda c: fetch_into(c, transport, image, store, digest, size, progress))
    assert intact(store, digest)
    assert progress.total == size
    assert [r.range for r in proxy.seen(f"/blobs/{digest}")] == [None, None]


def test_connection_refused_is_unreachable(store: FilesystemBlobStore) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    image = parse_reference(f"{endpoint}/team/app:v1")
    transport = Transport(endpoint, plain_http=True)
    manifest = error_of(
        lambda: run(lambda c: c.fetch_manifest(transport, image, "v1"), max_retries=1)
    )
    digest = "sha256:" + hashlib.sha256(b"x").hexdigest()
    blob = error_of(
        lambda: run(
            lambda c: fetch_into(c, transport, image, store, digest, 1, Progress()), max_retries=1
        )
    )
    assert manifest.kind == blob.kind == "unreachable"
    assert endpoint in manifest.message


def test_blob_longer_than_its_descriptor_is_corrupt(
    upstream: Upstream, store: FilesystemBlobStore
) -> None:
    digest, size = upstream.image.layer_digests[0], upstream.image.layer_sizes[0]
    progress = Progress()
    error = error_of(
        lambda: run(
            lambda c: fetch_into(
                c, upstream.transport(), upstream.ref("team/app"), store, digest, size - 1, progress
            )
        )
    )
    assert error.kind == "corrupt"
    assert not store.has(digest)
    assert progress.total == 0


def test_tls_registry_with_a_self_signed_certificate() -> None:
    with RegistryServer(tls=True) as registry:
        pushed = push_image(
            registry.url, "secure/app", "v1", make_layers(1, seed=5), verify=registry.ssl_context()
        )
        image = parse_reference(f"{registry.endpoint}/secure/app:v1")
        insecure = Transport(registry.endpoint, verify_tls=False)
        fetched = run(lambda c: c.fetch_manifest(insecure, image, "v1"))
        verified = error_of(
            lambda: run(lambda c: c.fetch_manifest(Transport(registry.endpoint), image, "v1"))
        )
    assert fetched.digest == pushed.manifest_digest
    assert verified.kind == "unreachable"
    assert "TLS" in verified.message
