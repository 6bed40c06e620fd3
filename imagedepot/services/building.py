"""Building a cache: resolve every image to manifests and blobs, check the size budget,
record what the cache will hold, and fetch only what the store lacks.

References are recorded *before* bytes are written, in a transaction that holds the blobs
for reuse, so garbage collection (on any machine) can never remove a blob a build is about
to rely on. Blobs are fetched in parallel with a bound, and a blob that two builds need at
once is fetched once (across machines too, through fetch claims).

Deduplication never grants access: a project gets a reference to a stored (or in-flight)
blob only once its own upstream, with its own login, has shown it holds that blob, or when
one of its built caches already holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from imagedepot.domain.caches import (
    GIB,
    FailureReason,
    ImageCache,
    ImageProgress,
    RegistryAccess,
)
from imagedepot.domain.eviction import NoRoom
from imagedepot.domain.manifests import (
    Descriptor,
    ManifestError,
    parse_manifest,
    select_platforms,
)
from imagedepot.domain.references import ImageReference, is_loopback_host, parse_reference
from imagedepot.ports import (
    BlobInfo,
    BlobStore,
    BlobStoreFull,
    BlobWriter,
    Clock,
    FetchedManifest,
    MetadataStore,
    RegistryClient,
    RegistryCredentials,
    RegistryError,
    StoreUnavailable,
    Transport,
)
from imagedepot.services.eviction import make_room
from imagedepot.services.fetch_claims import FetchClaims
from imagedepot.services.live_blobs import FollowedWriter, LiveBlob, SpoolMaker
from imagedepot.services.referrers import fetch_attached

CredentialsLookup = Callable[[str], RegistryCredentials | None]
"""Registry host -> the login the cache's pull secrets hold for it."""
ProjectMirrors = Callable[[str, str], Sequence[str]]
"""(project id, registry host) -> the mirrors the project's upstream for that host names."""
Checkpoint = Callable[[list[ImageProgress]], Awaitable[bool]]
"""Persist progress and keep the lease; False means stop (the cache is being deleted)."""

TAG_CHECK_SECONDS = 30.0
"""How long a refresh waits for the upstream to say what a tag stands for."""
_KIND_TO_CAUSE = {
    "not_found": (FailureReason.NOT_FOUND, "not found"),
    "unauthorized": (FailureReason.UNAUTHORIZED, "unauthorized"),
    "corrupt": (FailureReason.CORRUPT, "digest mismatch"),
    "upstream": (FailureReason.UPSTREAM, "upstream error"),
    "unreachable": (FailureReason.UPSTREAM, "registry unreachable"),
}


@dataclass(frozen=True)
class BuildPolicy:
    platforms: tuple[str, ...] = ("linux/amd64",)
    insecure_registries: tuple[str, ...] = ()
    mirrors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    parallel_blobs: int = 6
    progress_interval: float = 1.0


class BuildFailed(Exception):
    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class BuildStopped(Exception):
    """The cache stopped wanting a build (it is being deleted)."""


@dataclass
class _ResolvedImage:
    text: str
    reference: ImageReference
    transport: Transport
    top_digest: str
    manifests: list[FetchedManifest]
    blobs: list[Descriptor]
    attached: dict[str, str] = field(default_factory=dict)
    """Tags of artifacts attached to the image (cosign's, the referrers fallback) -> digest."""

    def digests(self) -> dict[str, int]:
        sizes = {m.digest: len(m.body) for m in self.manifests}
        sizes.update({b.digest: b.size for b in self.blobs})
        return sizes


@dataclass
class _Download:
    task: asyncio.Future[None]
    live: LiveBlob | None = None
    waiters: int = 0
    keep: bool = False
    """Finish it even when no build waits for it (a pull-through wants the blob stored)."""


class BlobFetcher:
    """Fetches blobs into the store, one download per digest however many builds and pulls
    want it (across processes and machines too, with `claims`); a download that no build waits
    for any more (all were deleted or failed) is cancelled, unless a pull-through wants it.
    With `spools`, each download can also be followed by registry clients as it arrives."""

    def __init__(
        self,
        blobs: BlobStore,
        registry: RegistryClient,
        parallel: int,
        claims: FetchClaims | None = None,
        *,
        poll_seconds: float = 0.25,
        spools: SpoolMaker | None = None,
    ) -> None:
        self._blobs = blobs
        self._registry = registry
        self._slots = asyncio.Semaphore(parallel)
        self._inflight: dict[str, _Download] = {}
        self._claims = claims
        self._poll = poll_seconds
        self._spools = spools

    @property
    def registry(self) -> RegistryClient:
        return self._registry

    async def ensure(
        self,
        transport: Transport,
        image: ImageReference,
        blob: Descriptor,
        on_progress: Callable[[int], None],
        *,
        proven: bool,
    ) -> None:
        """Make `blob` stored, fetching it through `transport` when nobody has it or is
        fetching it.

        Unless `proven` (the project already holds the blob), a blob that is stored or that
        another build is fetching is first asked of the build's own upstream with its own
        login: what the store holds for one project is never a way in for another whose
        upstream does not hold it.
        """
        checked = proven
        while True:
            download, ours = await self._obtain(
                transport, image, blob, on_progress, checked=checked, keep=False
            )
            checked = True  # fetched through our own upstream, or asked it
            if download is None:
                on_progress(blob.size)
                return
            if ours:
                await self._wait(download)
                return
            try:
                await self._wait(download)
            except Exception:  # noqa: S112 - another build's failure is not ours to report
                # Fetch it ourselves, through our own upstream, and fail with our own cause.
                continue
            on_progress(blob.size)
            return

    async def stream(
        self, transport: Transport, image: ImageReference, blob: Descriptor, *, proven: bool
    ) -> LiveBlob | None:
        """For a client pulling `blob` now: the download to follow, or None once the blob is
        stored (when no download of this process can be followed, this waits for it).

        The tenant rule of `ensure` holds: unless `proven`, the upstream is asked first.
        """
        checked = proven
        while True:
            download, ours = await self._obtain(
                transport, image, blob, lambda _: None, checked=checked, keep=True
            )
            checked = True
            if download is None:
                return None
            if download.live is not None and download.live.followable:
                return download.live
            try:
                await self._wait(download)
            except Exception:
                if ours:
                    raise
                continue
            return None

    async def _obtain(
        self,
        transport: Transport,
        image: ImageReference,
        blob: Descriptor,
        on_progress: Callable[[int], None],
        *,
        checked: bool,
        keep: bool,
    ) -> tuple[_Download | None, bool]:
        """(None, False) once `blob` is stored; else the download of this process that will
        store it, and whether this call started it. Waits while another process fetches it.
        Unless `checked`, the upstream is asked for the blob before a stored or shared one is
        used (starting our own download needs no asking: fetching is the proof)."""
        while True:
            if await asyncio.to_thread(self._blobs.has, blob.digest):
                if not checked:
                    await self._registry.check_blob(transport, image, blob.digest, blob.size)
                return None, False
            download = self._inflight.get(blob.digest)
            if download is None:
                if not await self._claim(blob.digest):
                    # Another process is fetching it: once our own upstream has shown it
                    # holds the blob, wait for it to land (or for that fetch to be given up).
                    if not checked:
                        await self._registry.check_blob(transport, image, blob.digest, blob.size)
                        checked = True
                    await asyncio.sleep(self._poll)
                    continue
                landed = await asyncio.to_thread(self._blobs.has, blob.digest)
                live = None
                if self._spools is not None:
                    live = LiveBlob(blob.size, asyncio.get_running_loop())
                # No await from here on: nothing else may start this download meanwhile.
                if blob.digest in self._inflight:
                    continue  # another build or pull of ours started it while we claimed
                if landed:
                    await self._release(blob.digest)  # it landed while we claimed
                    continue
                task = asyncio.ensure_future(
                    self._download(transport, image, blob, on_progress, live, keep)
                )
                started = self._inflight[blob.digest] = _Download(task, live, keep=keep)
                task.add_done_callback(functools.partial(self._forget, blob.digest, started))
                return started, True
            if not checked:
                await self._registry.check_blob(transport, image, blob.digest, blob.size)
            download.keep = download.keep or keep
            return download, False

    @staticmethod
    async def _wait(download: _Download) -> None:
        download.waiters += 1
        try:
            await asyncio.shield(download.task)
        finally:
            download.waiters -= 1
            if download.waiters == 0 and not download.keep and not download.task.done():
                download.task.cancel()

    def _forget(self, digest: str, download: _Download, _: object) -> None:
        if self._inflight.get(digest) is download:
            del self._inflight[digest]
        done = download.task
        if download.live is not None:
            download.live.finish(not done.cancelled() and done.exception() is None)
        if not done.cancelled():
            done.exception()  # retrieved here so a download nobody awaits any more logs nothing

    async def _download(
        self,
        transport: Transport,
        image: ImageReference,
        blob: Descriptor,
        on_progress: Callable[[int], None],
        live: LiveBlob | None,
        for_a_client: bool,
    ) -> None:
        renewing = asyncio.ensure_future(self._keep_claim(blob.digest))
        try:
            async with self._slots:
                stored = self._blobs.writer(blob.digest, blob.size)
                writer: BlobWriter = stored
                if live is not None:
                    await asyncio.to_thread(self._attach, live, stored, for_a_client)
                    writer = FollowedWriter(stored, live)
                try:
                    await self._registry.fetch_blob(
                        transport, image, blob.digest, writer, on_progress
                    )
                finally:
                    # Off the event loop: on S3 this aborts a multipart upload.
                    await asyncio.shield(asyncio.to_thread(writer.abort))
        finally:
            renewing.cancel()
            await self._release(blob.digest)

    def _attach(self, live: LiveBlob, writer: BlobWriter, for_a_client: bool) -> None:
        """Followers read the writer's staged file (opened when one comes); a writer that
        stages nothing locally (S3) feeds a spool, but only for a download a client started:
        a build's download is not copied to local disk in case someone asks."""
        assert self._spools is not None
        if writer.can_tap():
            live.attach(open_reader=writer.tap)
        elif for_a_client:
            live.attach(spool=self._spools())

    async def _claim(self, digest: str) -> bool:
        """Whether this process may fetch `digest` (always, without claims)."""
        if self._claims is None:
            return True
        return await asyncio.to_thread(self._claims.claim, digest)

    async def _release(self, digest: str) -> None:
        if self._claims is None:
            return
        # A claim that cannot be released now (the database away) lapses with its lease.
        with contextlib.suppress(StoreUnavailable):
            await asyncio.shield(asyncio.to_thread(self._claims.release, digest))

    async def _keep_claim(self, digest: str) -> None:
        if self._claims is None:
            return
        while True:
            await asyncio.sleep(self._claims.renew_every)
            # Missed renewals (the database away) at worst let another worker fetch it too.
            with contextlib.suppress(StoreUnavailable):
                await asyncio.to_thread(self._claims.renew, digest)


class CacheBuilder:
    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        registry: RegistryClient,
        fetcher: BlobFetcher,
        policy: BuildPolicy,
        clock: Clock,
        project_mirrors: ProjectMirrors = lambda project_id, registry: (),
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._registry = registry
        self._fetcher = fetcher
        self._policy = policy
        self._clock = clock
        self._project_mirrors = project_mirrors

    async def build(
        self,
        cache: ImageCache,
        credentials: CredentialsLookup,
        checkpoint: Checkpoint,
        *,
        owner: str | None = None,
    ) -> list[ImageProgress]:
        """Pull every image of `cache` into the store; the per-image digests and sizes.

        The blobs are referenced by `owner` (default: the cache; a refresh builds the next
        generation under an owner of its own, so the current one stays whole meanwhile).
        Raises BuildFailed with the reason and a message naming the image, or
        BuildStopped when a checkpoint says the cache no longer wants building.
        """
        owner = owner or cache.id
        resolved = list(
            await asyncio.gather(*(self._resolve(t, cache, credentials) for t in cache.spec.images))
        )
        self._check_budget(cache, resolved)
        await asyncio.to_thread(self._record_references, cache, owner, resolved)
        proven = await asyncio.to_thread(self._held_by_project, cache.project_id, owner, resolved)
        try:
            await asyncio.to_thread(self._store_manifests, resolved)
        except BlobStoreFull as error:
            raise _store_full(error, resolved) from None

        done: dict[str, int] = {}

        def progress() -> list[ImageProgress]:
            return [
                ImageProgress(
                    image=image.text,
                    digest=image.top_digest,
                    size_bytes=sum(image.digests().values()),
                    pulled_bytes=sum(min(done.get(d, 0), s) for d, s in image.digests().items()),
                )
                for image in resolved
            ] + [attached for image in resolved for attached in attached_progress(image)]

        for image in resolved:
            for manifest in image.manifests:
                done[manifest.digest] = len(manifest.body)

        def tracker(digest: str) -> Callable[[int], None]:
            def add(count: int) -> None:
                done[digest] = max(0, done.get(digest, 0) + count)

            return add

        downloads: dict[str, Awaitable[None]] = {}
        for image in resolved:
            for blob in image.blobs:
                if blob.digest not in downloads:
                    downloads[blob.digest] = self._fetch(
                        image, blob, tracker(blob.digest), proven=blob.digest in proven
                    )
        work = asyncio.ensure_future(asyncio.gather(*downloads.values()))
        try:
            while True:
                finished, _ = await asyncio.wait({work}, timeout=self._policy.progress_interval)
                if finished:
                    try:
                        work.result()
                    except BlobStoreFull as error:
                        raise _store_full(error, resolved) from None
                    break
                if not await checkpoint(progress()):
                    raise BuildStopped(cache.id)
        finally:
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
        return progress()

    async def moved_tags(
        self, cache: ImageCache, credentials: CredentialsLookup
    ) -> tuple[dict[str, str], dict[str, str | None]]:
        """Ask the upstream what each tagged image of `cache` stands for now: the images whose
        tag moved (image -> new digest), and for every image asked, why asking failed (None:
        it answered). An image pinned by digest is not asked."""
        current = {progress.image: progress.digest for progress in cache.images}
        moved: dict[str, str] = {}
        errors: dict[str, str | None] = {}
        for text in cache.spec.images:
            reference = parse_reference(text)
            if reference.digest is not None or reference.tag is None:
                continue
            error: RegistryError | None = None
            for transport in self._transports(reference.registry, cache, credentials):
                try:
                    digest = await self._registry.manifest_digest(
                        transport, reference, reference.tag, TAG_CHECK_SECONDS
                    )
                except RegistryError as failure:
                    error = failure
                    continue
                error = None
                if digest != current.get(text):
                    moved[text] = digest
                break
            errors[text] = None if error is None else error.message
        return moved, errors

    async def _fetch(
        self,
        image: _ResolvedImage,
        blob: Descriptor,
        on_progress: Callable[[int], None],
        *,
        proven: bool,
    ) -> None:
        try:
            await self._fetcher.ensure(
                image.transport, image.reference, blob, on_progress, proven=proven
            )
        except RegistryError as error:
            raise _failure(image.text, error) from None

    async def _resolve(
        self, text: str, cache: ImageCache, credentials: CredentialsLookup
    ) -> _ResolvedImage:
        reference = parse_reference(text)
        top, transport = await self._first_manifest(text, reference, cache, credentials)
        manifests = [top]
        try:
            parsed = parse_manifest(top.body, top.media_type)
            if parsed.is_index:
                chosen = select_platforms(parsed, self._policy.platforms)
                if not chosen:
                    wanted = ", ".join(self._policy.platforms)
                    raise BuildFailed(
                        FailureReason.NOT_FOUND,
                        f"image {text}: no manifest for platform {wanted} in its index",
                    )
                blobs: list[Descriptor] = []
                for child in chosen:
                    fetched = await self._manifest(text, transport, reference, child.digest)
                    manifests.append(fetched)
                    blobs.extend(parse_manifest(fetched.body, fetched.media_type).children)
            else:
                blobs = list(parsed.children)
        except ManifestError as error:
            raise BuildFailed(FailureReason.UPSTREAM, f"image {text}: {error}") from None
        attached = await fetch_attached(self._registry, transport, reference, top.digest)
        return _ResolvedImage(
            text,
            reference,
            transport,
            top.digest,
            [*manifests, *attached.manifests],
            [*blobs, *attached.blobs],
            attached.tags,
        )

    async def _first_manifest(
        self,
        text: str,
        reference: ImageReference,
        cache: ImageCache,
        credentials: CredentialsLookup,
    ) -> tuple[FetchedManifest, Transport]:
        """Try the mirrors of the image's registry, then the registry itself (TLS first, then
        plain HTTP where that is allowed), and keep the first that answers."""
        candidates = self._transports(reference.registry, cache, credentials)
        last_error: RegistryError | None = None
        for transport in candidates:
            try:
                return await self._registry.fetch_manifest(
                    transport, reference, reference.reference
                ), transport
            except RegistryError as error:
                last_error = error
                if error.kind == "corrupt":
                    break
        assert last_error is not None
        raise _failure(text, last_error)

    async def _manifest(
        self, text: str, transport: Transport, reference: ImageReference, digest: str
    ) -> FetchedManifest:
        try:
            return await self._registry.fetch_manifest(transport, reference, digest)
        except RegistryError as error:
            raise _failure(text, error) from None

    def _transports(
        self, registry: str, cache: ImageCache, credentials: CredentialsLookup
    ) -> list[Transport]:
        access = {entry.server: entry for entry in cache.spec.registries}.get(registry)
        mirrors = (
            *self._policy.mirrors.get(registry, ()),
            *self._project_mirrors(cache.project_id, registry),
        )
        return transports_for(registry, access, mirrors, credentials, self._policy)

    def _check_budget(self, cache: ImageCache, resolved: list[_ResolvedImage]) -> None:
        sizes: dict[str, int] = {}
        for image in resolved:
            sizes.update(image.digests())
        total = sum(sizes.values())
        budget = cache.spec.size_gib * GIB
        if total > budget:
            largest = max(resolved, key=lambda image: sum(image.digests().values()))
            raise BuildFailed(
                FailureReason.SIZE_EXCEEDED,
                f"size budget exceeded: the images need {total / GIB:.2f} GiB, the cache allows "
                f"{cache.spec.size_gib} GiB (largest: image {largest.text}, "
                f"{sum(largest.digests().values()) / GIB:.2f} GiB)",
            )

    def _record_references(
        self, cache: ImageCache, owner: str, resolved: list[_ResolvedImage]
    ) -> None:
        infos: dict[str, BlobInfo] = {}
        for image in resolved:
            for manifest in image.manifests:
                infos[manifest.digest] = BlobInfo(
                    manifest.digest, len(manifest.body), manifest.media_type
                )
            for blob in image.blobs:
                infos.setdefault(blob.digest, BlobInfo(blob.digest, blob.size, blob.media_type))
        # The build's blobs replace whatever an earlier build of another spec recorded.
        with self._store.transaction() as uow:
            try:
                make_room(uow, cache, {d: i.size for d, i in infos.items()}, self._clock.now())
            except NoRoom as error:
                raise BuildFailed(FailureReason.QUOTA, error.message) from None
            uow.blob_locks.hold_for_reuse(list(infos))
            uow.blob_refs.drop_refs(owner)
            uow.blob_refs.add_refs(owner, list(infos.values()))

    def _held_by_project(
        self, project_id: str, owner: str, resolved: list[_ResolvedImage]
    ) -> set[str]:
        """The blobs the project already holds in a built cache; the owner's own references
        do not count, since a build records them before it has checked them."""
        digests = [blob.digest for image in resolved for blob in image.blobs]
        with self._store.transaction(read_only=True) as uow:
            return uow.blob_refs.held_by_project(project_id, digests, owner)

    def _store_manifests(self, resolved: list[_ResolvedImage]) -> None:
        for image in resolved:
            for manifest in image.manifests:
                if not self._blobs.has(manifest.digest):
                    self._blobs.put_bytes(manifest.digest, manifest.body)


def _store_full(error: BlobStoreFull, resolved: list[_ResolvedImage]) -> BuildFailed:
    sizes: dict[str, int] = {}
    for image in resolved:
        sizes.update(image.digests())
    return BuildFailed(
        FailureReason.STORAGE_FULL,
        f"the blob store is full: {error}; the images need {sum(sizes.values())} bytes in all "
        "(blobs other caches already hold included); nothing partial was kept, and creating "
        "the cache again once there is room builds it",
    )


def attached_progress(image: _ResolvedImage) -> list[ImageProgress]:
    """An entry per attached tag, so the registry port serves it by that tag."""
    sizes = {manifest.digest: len(manifest.body) for manifest in image.manifests}
    return [
        ImageProgress(
            image=f"{image.reference.registry}/{image.reference.repository}:{tag}",
            digest=digest,
            size_bytes=sizes.get(digest, 0),
            pulled_bytes=sizes.get(digest, 0),
        )
        for tag, digest in image.attached.items()
    ]


def transports_for(
    registry: str,
    access: RegistryAccess | None,
    mirrors: Sequence[str],
    credentials: CredentialsLookup,
    policy: BuildPolicy,
) -> list[Transport]:
    """How to reach `registry`: its mirrors first, then itself (TLS first, then plain HTTP
    where that is allowed), each with the login `credentials` hold for its host."""
    login = credentials(registry)
    transports: list[Transport] = []
    for endpoint in dict.fromkeys((*mirrors, registry)):
        creds = login if endpoint == registry else credentials(endpoint)
        if endpoint == registry and access is not None and access.plain_http:
            transports.append(Transport(endpoint, plain_http=True, credentials=creds))
            continue
        relaxed = is_loopback_host(endpoint) or endpoint in policy.insecure_registries
        skip_verify = relaxed or (access is not None and access.insecure_skip_verify)
        transports.append(Transport(endpoint, verify_tls=not skip_verify, credentials=creds))
        if relaxed:
            transports.append(Transport(endpoint, plain_http=True, credentials=creds))
    return transports


def _failure(image: str, error: RegistryError) -> BuildFailed:
    reason, cause = _KIND_TO_CAUSE.get(error.kind, _KIND_TO_CAUSE["upstream"])
    return BuildFailed(reason, f"image {image}: {cause}: {error.message}")
