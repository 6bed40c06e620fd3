"""Pull-through on the registry port: a pull of something no cache holds, from a registry the
puller's project lists as an upstream, is fetched from that upstream once, streamed to the
client as it arrives, and leaves a cache behind; a pull of a cached tag is checked against the
upstream as the upstream's check policy says, and served from the cache when the upstream
cannot answer.

A miss resolves the manifest (and, for an index, the manifests of the platforms the server
builds), stores those manifests, and records a cache (`pt-<repository>-<tag>-<digest>`,
labelled `imagedepot.io/pull-through`) with the blobs it references, all before the manifest
is answered, so the client's next requests find them. The worker then builds that cache like
any other; the blobs a client asks for meanwhile are fetched by the same downloads (one per
blob in this process, one per blob across processes through fetch claims), which the client
follows as they arrive. Concurrent misses of one image in one process resolve it once.

The tenant rule of building holds: a blob the store holds, or that someone else is fetching,
is given to a project only once its own upstream has shown that it holds it. Pull-through is
for pullers with a project credential only; an anonymous pull never creates anything.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from imagedepot.domain.caches import (
    GIB,
    SIZE_GIB_DEFAULT,
    SIZE_GIB_MAX,
    CacheSpec,
    CacheStatus,
    ImageCache,
    ImageProgress,
    RegistryAccess,
)
from imagedepot.domain.errors import (
    InvalidInput,
    QuotaExceeded,
    StorageFull,
    UpstreamUnavailable,
)
from imagedepot.domain.eviction import NoRoom
from imagedepot.domain.manifests import Descriptor, ManifestError, parse_manifest, select_platforms
from imagedepot.domain.references import (
    DOCKER_HUB,
    ImageReference,
    parse_reference,
    parse_repository_name,
)
from imagedepot.domain.served_names import upstream_host
from imagedepot.domain.upstreams import (
    PULL_THROUGH_LABEL,
    Upstream,
    is_pull_through,
    pull_through_cache_name,
)
from imagedepot.ports import (
    BlobInfo,
    BlobStore,
    BlobStoreFull,
    Clock,
    FetchedManifest,
    MetadataStore,
    RegistryClient,
    RegistryCredentials,
    RegistryError,
    Transport,
)
from imagedepot.services.building import BlobFetcher, BuildPolicy, transports_for
from imagedepot.services.eviction import make_room
from imagedepot.services.live_blobs import LiveBlob
from imagedepot.services.secrets import SecretService
from imagedepot.services.serving import (
    BlobUnknown,
    ManifestUnknown,
    NameUnknown,
    Puller,
    ServedBlob,
    ServedManifest,
    ServingService,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
CHECK_TIMEOUT_SECONDS = 5.0
"""How long a tag check waits for the upstream before the cached copy is served."""
CHECK_RECORD_INTERVAL = timedelta(seconds=30)
"""A successful check is written to the cache at most this often (a failed one at once)."""
_FALLBACK_KINDS = frozenset({"unreachable", "upstream"})
"""Failures after which the next endpoint (a mirror, then the registry) is tried."""


@dataclass(frozen=True)
class FollowedBlob:
    """A blob still arriving from the upstream: its bytes are `live.follow()`."""

    digest: str
    size: int
    media_type: str
    live: LiveBlob


@dataclass(frozen=True)
class PullThroughCounters:
    """What the registry port counts for `/metrics`."""

    miss: Callable[[], None] = lambda: None
    stale: Callable[[str], None] = lambda reason: None
    """A cached copy served because the upstream check failed, by why (the error kind)."""


class PullThrough:
    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        clock: Clock,
        registry: RegistryClient,
        fetcher: BlobFetcher,
        serving: ServingService,
        secrets: SecretService,
        policy: BuildPolicy,
        *,
        notify_worker: Callable[[], None] = lambda: None,
        counters: PullThroughCounters | None = None,
        check_timeout: float = CHECK_TIMEOUT_SECONDS,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._clock = clock
        self._registry = registry
        self._fetcher = fetcher
        self._serving = serving
        self._secrets = secrets
        self._policy = policy
        self._notify_worker = notify_worker
        self._counters = counters or PullThroughCounters()
        self._check_timeout = check_timeout
        self._resolving: dict[tuple[str, str], asyncio.Future[None]] = {}

    # --- manifests --------------------------------------------------------------------------

    async def manifest(
        self,
        puller: Puller,
        name: str,
        reference: str,
        *,
        upstream: str | None = None,
        accepted: frozenset[str] = frozenset(),
    ) -> ServedManifest:
        """What `name:reference` is for a puller with a project: from its caches (a tag checked
        against the upstream first when its policy says so), else pulled through."""
        project_id = _project(puller)

        def served() -> Awaitable[ServedManifest]:
            return asyncio.to_thread(
                self._serving.manifest,
                puller,
                name,
                reference,
                upstream=upstream,
                accepted=accepted,
            )

        try:
            hit = await served()
        except (NameUnknown, ManifestUnknown):
            found = await asyncio.to_thread(self._wanted, project_id, name, reference, upstream)
            if found is None:
                raise
            await self._pull_once(*found)
            return await served()
        if hit.image is None or hit.tag_digest is None:
            return hit  # by digest: content never changes
        cached = parse_reference(hit.image)
        configured = await asyncio.to_thread(self._upstream, project_id, cached.registry)
        if configured is None:
            return hit
        moved = await self._check(configured, hit, cached)
        if not moved:
            return hit
        tagged = ImageReference(cached.registry, cached.repository, cached.tag, None)
        try:
            await self._pull_once(configured, tagged)
        except (ManifestUnknown, UpstreamUnavailable, StorageFull, QuotaExceeded) as error:
            # The tag moved but its new content cannot be had: the cached copy still serves.
            self._counters.stale("moved_unavailable")
            log.warning(
                "serving the cached %s: its moved tag cannot be pulled: %s", hit.image, error
            )
            return hit
        return await served()

    async def _check(self, upstream: Upstream, hit: ServedManifest, cached: ImageReference) -> bool:
        """Whether the upstream says the tag moved; a failed check serves the cached copy."""
        assert hit.image is not None
        now = self._clock.now()
        cache = await asyncio.to_thread(self._cache, hit.cache_id)
        progress = next((p for p in cache.images if p.image == hit.image), None) if cache else None
        if cache is None or progress is None:
            return False
        if not upstream.check.due(progress.checked_at, now):
            return False
        tag = cached.tag or cached.reference

        def head(transport: Transport) -> Awaitable[str]:
            return self._registry.manifest_digest(transport, cached, tag, self._check_timeout)

        transports = await asyncio.to_thread(self._transports, upstream)
        try:
            digest = await _first_answer(transports, head)
        except RegistryError as error:
            self._counters.stale(error.kind)
            if progress.upstream_error != error.message or _record_due(
                progress.upstream_error_at, now
            ):
                await asyncio.to_thread(self._note_check, cache.id, hit.image, error.message)
            return False
        if progress.upstream_error or _record_due(progress.checked_at, now):
            await asyncio.to_thread(self._note_check, cache.id, hit.image, None)
        return digest != hit.tag_digest

    async def _pull_once(self, upstream: Upstream, image: ImageReference) -> None:
        """Resolve `image` through `upstream` and record its cache; concurrent calls for the
        same project and image share one resolution."""
        key = (upstream.project_id, str(image))
        pending = self._resolving.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._pull(upstream, image))
            self._resolving[key] = pending
            pending.add_done_callback(lambda _: self._resolving.pop(key, None))
        await asyncio.shield(pending)

    async def _pull(self, upstream: Upstream, image: ImageReference) -> None:
        self._counters.miss()
        transports = await asyncio.to_thread(self._transports, upstream)
        top, transport = await self._first_manifest(transports, image)
        manifests, blobs = await self._contents(transport, image, top)
        for manifest in manifests:
            if not await asyncio.to_thread(self._blobs.has, manifest.digest):
                try:
                    await asyncio.to_thread(self._blobs.put_bytes, manifest.digest, manifest.body)
                except BlobStoreFull as error:
                    raise StorageFull(f"{image}: {error}") from None
        await asyncio.to_thread(self._record, upstream, image, manifests, blobs)
        self._notify_worker()

    async def _first_manifest(
        self, transports: list[Transport], image: ImageReference
    ) -> tuple[FetchedManifest, Transport]:
        async def fetch(transport: Transport) -> tuple[FetchedManifest, Transport]:
            return await self._registry.fetch_manifest(transport, image, image.reference), transport

        try:
            return await _first_answer(transports, fetch)
        except RegistryError as error:
            raise _refusal(image, error) from None

    async def _contents(
        self, transport: Transport, image: ImageReference, top: FetchedManifest
    ) -> tuple[list[FetchedManifest], list[Descriptor]]:
        """The manifests to keep (an index and its chosen platforms' manifests) and the blobs."""
        try:
            parsed = parse_manifest(top.body, top.media_type)
            if not parsed.is_index:
                return [top], list(parsed.children)
            manifests, blobs = [top], list[Descriptor]()
            for child in select_platforms(parsed, self._policy.platforms):
                try:
                    fetched = await self._registry.fetch_manifest(transport, image, child.digest)
                except RegistryError as error:
                    raise _refusal(image, error) from None
                manifests.append(fetched)
                blobs.extend(parse_manifest(fetched.body, fetched.media_type).children)
        except ManifestError as error:
            raise UpstreamUnavailable(
                f"{image}: the upstream's manifest is unusable: {error}"
            ) from None
        if len(manifests) == 1:
            wanted = ", ".join(self._policy.platforms)
            raise ManifestUnknown(f"{image}: no manifest for platform {wanted} in its index")
        return manifests, blobs

    def _record(
        self,
        upstream: Upstream,
        image: ImageReference,
        manifests: list[FetchedManifest],
        blobs: list[Descriptor],
    ) -> None:
        """The cache the pull leaves behind, with every blob it references, in one transaction."""
        top = manifests[0]
        infos = {m.digest: BlobInfo(m.digest, len(m.body), m.media_type) for m in manifests}
        for blob in blobs:
            infos.setdefault(blob.digest, BlobInfo(blob.digest, blob.size, blob.media_type))
        total = sum(info.size for info in infos.values())
        named = ImageReference(image.registry, image.repository, image.tag, top.digest)
        spec = CacheSpec(
            name=pull_through_cache_name(image, top.digest),
            images=(str(named),),
            size_gib=min(SIZE_GIB_MAX, max(SIZE_GIB_DEFAULT, math.ceil(total / GIB))),
            pull_secrets=(upstream.pull_secret,) if upstream.pull_secret else (),
            registries=(
                RegistryAccess(
                    upstream.registry,
                    plain_http=upstream.plain_http,
                    insecure_skip_verify=upstream.insecure_skip_verify,
                    pull_secret=upstream.pull_secret,
                ),
            ),
        )
        spec.validate()
        now = self._clock.now()
        progress = ImageProgress(str(named), top.digest, total, checked_at=now)
        with self._store.transaction() as uow:
            existing = next(iter(uow.caches.list(upstream.project_id, spec.name)), None)
            if existing is not None and existing.status is not CacheStatus.FAILED:
                if existing.status is CacheStatus.DELETING:
                    raise UpstreamUnavailable(
                        f"the pull-through cache {spec.name} is being deleted; pull again "
                        "once it is gone"
                    )
                return  # made by an earlier pull (or another replica)
            if existing is None:
                cache = ImageCache.new(upstream.project_id, spec, now)
                try:
                    make_room(uow, cache, {d: i.size for d, i in infos.items()}, now)
                except NoRoom as error:
                    raise QuotaExceeded(f"{image}: {error.message}") from None
                cache.labels = {PULL_THROUGH_LABEL: _label_value(upstream.registry)}
                cache.images = [progress]
                uow.caches.add(cache)
            else:
                version = existing.resource_version
                existing.retry(now)
                existing.images = [progress]
                cache = existing
                if not uow.caches.save(existing, version):
                    return  # someone else retried it first
            uow.blob_locks.hold_for_reuse(list(infos))
            uow.blob_refs.drop_refs(cache.id)
            uow.blob_refs.add_refs(cache.id, list(infos.values()))

    # --- blobs ------------------------------------------------------------------------------

    async def blob(self, puller: Puller, name: str, digest: str) -> ServedBlob | FollowedBlob:
        """A blob for a puller with a project: from its caches, or, for one of its pull-through
        caches being built, stored (once its upstream has shown it) or a download to follow."""
        project_id = _project(puller)
        try:
            return await asyncio.to_thread(self._serving.blob, puller, name, digest)
        except BlobUnknown:
            found = await asyncio.to_thread(self._pulling_ref, project_id, digest)
        if found is None:
            # The cache may have become Available since the first look.
            return await asyncio.to_thread(self._serving.blob, puller, name, digest)
        cache, info, proven = found
        image = parse_reference(cache.spec.images[0])
        upstream = await asyncio.to_thread(self._upstream, project_id, image.registry)
        if upstream is None:
            raise BlobUnknown(f"blob {digest} is not known")
        descriptor = Descriptor(info.media_type, digest, info.size)

        def follow(transport: Transport) -> Awaitable[LiveBlob | None]:
            return self._fetcher.stream(transport, image, descriptor, proven=proven)

        transports = await asyncio.to_thread(self._transports, upstream)
        try:
            live = await _first_answer(transports, follow)
        except BlobStoreFull as error:
            raise StorageFull(f"blob {digest}: {error}") from None
        except RegistryError as error:
            if error.kind in _FALLBACK_KINDS:
                raise UpstreamUnavailable(f"blob {digest}: {error.message}") from None
            raise BlobUnknown(f"blob {digest} is not known: {error.message}") from None
        if live is not None:
            return FollowedBlob(digest, info.size, info.media_type, live)
        return ServedBlob(digest, info.size, info.media_type, self._blobs)

    def _pulling_ref(
        self, project_id: str, digest: str
    ) -> tuple[ImageCache, BlobInfo, bool] | None:
        with self._store.transaction(read_only=True) as uow:
            pulling = [cache for cache in uow.caches.building(project_id) if is_pull_through(cache)]
            owners = uow.blob_refs.owners_of(digest, [cache.id for cache in pulling])
            holder = next((cache for cache in pulling if cache.id in owners), None)
            if holder is None:
                return None
            proven = bool(uow.blob_refs.held_by_project(project_id, [digest], holder.id))
            return holder, owners[holder.id], proven

    # --- helpers ----------------------------------------------------------------------------

    def _wanted(
        self, project_id: str, name: str, reference: str, ns: str | None
    ) -> tuple[Upstream, ImageReference] | None:
        """The upstream and image a registry-port name stands for in the project, if any: `ns`
        names the registry (as containerd sends it), else a host in the name does; a bare name
        is Docker Hub's when the project pulls Docker Hub through, else that of the project's
        only upstream (image names cannot carry a host with a port, so a client such as skopeo
        reaches a registry on a port this way)."""
        registry, _ = parse_repository_name(name)
        with self._store.transaction(read_only=True) as uow:
            if ns:
                registry = upstream_host(ns)
            elif registry is None:
                listed = {u.registry: u for u in uow.upstreams.list(project_id)}
                only = next(iter(listed)) if len(listed) == 1 else DOCKER_HUB
                registry = DOCKER_HUB if DOCKER_HUB in listed else only
            configured = uow.upstreams.get(project_id, registry)
        if configured is None:
            return None
        path = name if ns or parse_repository_name(name)[0] is None else name.split("/", 1)[1]
        separator = "@" if ":" in reference else ":"
        try:
            image = parse_reference(f"{registry}/{path}{separator}{reference}")
        except InvalidInput as error:
            raise ManifestUnknown(
                f"{name}:{reference} names no upstream image: {error.message}"
            ) from None
        return configured, image

    def _upstream(self, project_id: str, registry: str) -> Upstream | None:
        with self._store.transaction(read_only=True) as uow:
            return uow.upstreams.get(project_id, registry)

    def _cache(self, cache_id: str) -> ImageCache | None:
        with self._store.transaction(read_only=True) as uow:
            return uow.caches.get(cache_id)

    def _note_check(self, cache_id: str, image: str, error: str | None) -> None:
        with self._store.transaction() as uow:
            cache = uow.caches.get(cache_id)
            if cache is None:
                return
            version = cache.resource_version
            cache.note_check(image, self._clock.now(), error)
            uow.caches.save(cache, version)  # a lost race loses only a note

    def _transports(self, upstream: Upstream) -> list[Transport]:
        secrets = (upstream.pull_secret,) if upstream.pull_secret else ()
        access = RegistryAccess(
            upstream.registry,
            plain_http=upstream.plain_http,
            insecure_skip_verify=upstream.insecure_skip_verify,
            pull_secret=upstream.pull_secret,
        )
        mirrors = (*upstream.mirrors, *self._policy.mirrors.get(upstream.registry, ()))

        def login(host: str) -> RegistryCredentials | None:
            return self._secrets.credentials_for(upstream.project_id, secrets, host)

        return transports_for(upstream.registry, access, mirrors, login, self._policy)


async def _first_answer(
    transports: list[Transport], attempt: Callable[[Transport], Awaitable[T]]
) -> T:
    """What `attempt` gets from the first endpoint that answers (mirrors come first): on to
    the next when one is unreachable or failing, not when it answers no (a 404 or a 401 is
    an answer); the last RegistryError when none answers."""
    last_error = RegistryError("unreachable", "no endpoint to ask")
    for transport in transports:
        try:
            return await attempt(transport)
        except RegistryError as error:
            last_error = error
            if error.kind not in _FALLBACK_KINDS:
                break
    raise last_error


def _project(puller: Puller) -> str:
    if puller.project_id is None:
        raise NameUnknown("anonymous pulls never pull through")
    return puller.project_id


def _refusal(image: ImageReference, error: RegistryError) -> Exception:
    if error.kind in ("not_found", "unauthorized"):
        return ManifestUnknown(f"{image}: the upstream answered: {error.message}")
    return UpstreamUnavailable(f"{image}: {error.message}")


def _record_due(last: datetime | None, now: datetime) -> bool:
    return last is None or now - last >= CHECK_RECORD_INTERVAL


def _label_value(registry: str) -> str:
    """A registry host as a label value (no ':', at most 63 characters)."""
    return registry.replace(":", "_")[:63]
