"""Serving what the caches hold on the registry port: which manifest or blob a pull gets, who
may have it, and when each cache was last used.

A name and tag resolve to the newest Available cache (by creation) that holds an image
served under that name; newer caches win because they were pulled later. A puller with a
credential sees its project's caches only; an anonymous puller sees the caches of every
project that allows anonymous pulls, with the same newest-wins rule across them, except
that across projects a name must not stand for two upstreams: when `team/app` is served by
one project from registry-a and by another from registry-b, neither answers to it (only to
`registry-a/team/app`, or with `ns=`), so no project can shadow another's image. By digest
there is no ambiguity, but only digests such a cache holds are served, so a project never
learns another's content. Last use is written at most once a minute per cache, since an
eviction policy needs nothing finer and a pull should not wait on a write.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from imagedepot.domain.caches import CacheStatus, ImageCache, ImageProgress
from imagedepot.domain.errors import InvalidInput, NotFound
from imagedepot.domain.manifests import (
    IMAGE_TYPES,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    ManifestError,
    parse_manifest,
    select_platforms,
)
from imagedepot.domain.references import DIGEST_RE, TAG_RE, ImageReference, parse_reference
from imagedepot.domain.referrers import referrer_descriptor, referrers_index
from imagedepot.domain.served_names import ServedName, served_name
from imagedepot.domain.upstreams import is_pull_through
from imagedepot.ports import (
    BlobCorrupt,
    BlobSource,
    BlobStore,
    Clock,
    MetadataStore,
    UnitOfWork,
)

DEFAULT_PLATFORM = "linux/amd64"
"""The platform picked from an index for a client that accepts no index (as distribution does)."""
USE_RECORD_INTERVAL = timedelta(seconds=60)


class NameUnknown(NotFound):
    """No cache the puller may see holds an image under this name."""


class ManifestUnknown(NotFound):
    """The name is known but not this tag or manifest digest."""


class NameAmbiguous(NameUnknown):
    """Anonymous projects serve this name from different upstreams: the puller must say which."""


class BlobUnknown(NotFound):
    """No cache the puller may see holds this blob."""


class NameInvalid(InvalidInput):
    """Not a repository name."""


class DigestInvalid(InvalidInput):
    """Not a sha256 digest."""


@dataclass(frozen=True)
class Puller:
    """Who pulls: the project of a credential, or anyone (`project_id` None)."""

    project_id: str | None

    @property
    def anonymous(self) -> bool:
        return self.project_id is None


ANONYMOUS = Puller(None)


@dataclass(frozen=True)
class ServedManifest:
    body: bytes
    media_type: str
    digest: str
    cache_id: str
    """The cache it came from: the one whose use a pull records."""
    image: str | None = None
    """For a tag: the cached image it stands for (as the cache's spec names it)."""
    tag_digest: str | None = None
    """For a tag: the digest the tag was resolved to (an index's, when a platform's manifest
    is served from it)."""


@dataclass(frozen=True)
class ServedBlob:
    digest: str
    size: int
    media_type: str
    source: BlobSource
    """Where the verified bytes are, for the HTTP layer to send without reading them whole."""


@dataclass(frozen=True)
class Page:
    items: list[str]
    more: bool
    """True when items after the last one were left off."""


@dataclass(frozen=True)
class _Holding:
    cache: ImageCache
    reference: ImageReference
    image: ImageProgress


class ServingService:
    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        clock: Clock,
        *,
        use_record_interval: timedelta = USE_RECORD_INTERVAL,
        default_platform: str = DEFAULT_PLATFORM,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._clock = clock
        self._use_interval = use_record_interval.total_seconds()
        self._default_platform = default_platform
        self._last_recorded: dict[str, float] = {}
        self._use_lock = threading.Lock()

    # --- pulls ------------------------------------------------------------------------------

    def manifest(
        self,
        puller: Puller,
        name: str,
        reference: str,
        *,
        upstream: str | None = None,
        accepted: frozenset[str] = frozenset(),
    ) -> ServedManifest:
        """The manifest `name:reference` (a tag or a digest) resolves to for `puller`.

        For a tag naming an index and a client whose `accepted` media types name image
        manifests but no index, the index's manifest for the default platform is served
        instead, as registries do for old clients.
        """
        wanted = _served_name(name, upstream)
        by_digest = _is_digest(reference)
        if not by_digest and not TAG_RE.match(reference):
            raise ManifestUnknown(f"{reference!r} is neither a tag nor a digest")
        with self._store.transaction(read_only=True) as uow:
            holdings = self._holdings(uow, puller, wanted)
            if not holdings:
                raise NameUnknown(f"repository {name} is not known")
            if by_digest:
                caches = _unique_caches(holdings)
                owners = uow.blob_refs.owners_of(reference, [cache.id for cache in caches])
                holder = next((cache for cache in caches if cache.id in owners), None)
                if holder is None or owners[holder.id].media_type not in MANIFEST_TYPES:
                    raise ManifestUnknown(f"manifest {reference} is not known in {name}")
                media_type = owners[holder.id].media_type
                digest = reference
            else:
                tagged = next((h for h in holdings if h.reference.tag == reference), None)
                if tagged is None or tagged.image.digest is None:
                    raise ManifestUnknown(f"tag {reference} is not known in {name}")
                holder, digest, image = tagged.cache, tagged.image.digest, tagged.image.image
                recorded = uow.blob_refs.owners_of(digest, [holder.id]).get(holder.id)
                if recorded is None:
                    raise ManifestUnknown(f"manifest {digest} of {name}:{reference} is missing")
                media_type = recorded.media_type
            body = self._manifest_bytes(digest)
            if by_digest:
                return ServedManifest(body, media_type, digest, holder.id)
            served = ServedManifest(body, media_type, digest, holder.id, image, digest)
            if _wants_platform_manifest(media_type, accepted):
                served = self._platform_manifest(uow, holder, body, media_type, name, reference)
                served = replace(served, image=image, tag_digest=digest)
        return served

    def blob(self, puller: Puller, name: str, digest: str) -> ServedBlob:
        """The blob `digest`, when a cache the puller may see holds it (whatever its name)."""
        _served_name(name)
        if not _is_digest(digest):
            raise DigestInvalid(f"{digest!r} is not a sha256 digest", field="digest")
        with self._store.transaction(read_only=True) as uow:
            projects = self._project_ids(uow, puller)
            recorded = uow.blob_refs.available_ref(digest, projects)
        size = self._blobs.size(digest) if recorded is not None else None
        if recorded is None or size is None:
            raise BlobUnknown(f"blob {digest} is not known")
        return ServedBlob(digest, size, recorded.media_type, self._blobs)

    def referrers(
        self, puller: Puller, name: str, digest: str, artifact_type: str | None = None
    ) -> bytes:
        """The OCI referrers index of `digest`: every manifest a cache the puller may see holds
        (with the subject) whose `subject` is `digest`, of `artifact_type` when one is given.
        Empty when there are none, as the distribution spec wants."""
        wanted = _served_name(name)
        if not _is_digest(digest):
            raise DigestInvalid(f"{digest!r} is not a sha256 digest", field="digest")
        found: dict[str, dict[str, object]] = {}
        with self._store.transaction(read_only=True) as uow:
            caches = _unique_caches(self._holdings(uow, puller, wanted))
            if not caches:
                raise NameUnknown(f"repository {name} is not known")
            holders = uow.blob_refs.owners_of(digest, [cache.id for cache in caches])
            for cache in caches:
                if cache.id not in holders:
                    continue
                for info in uow.blob_refs.refs_of(cache.id):
                    if info.media_type not in MANIFEST_TYPES or info.digest in found:
                        continue
                    try:
                        body = self._blobs.read_bytes(info.digest, MAX_MANIFEST_BYTES)
                    except (FileNotFoundError, BlobCorrupt):
                        continue
                    descriptor = referrer_descriptor(body, info.media_type, info.digest, digest)
                    if descriptor is not None:
                        found[info.digest] = descriptor
        chosen = [
            descriptor
            for descriptor in found.values()
            if artifact_type is None or descriptor.get("artifactType") == artifact_type
        ]
        return referrers_index(chosen)

    def knows_name(self, puller: Puller, name: str) -> bool:
        """Whether a cache the puller may see serves `name`: an anonymous puller that may see
        the repository is told what it lacks (404), not asked for a login it cannot have."""
        try:
            wanted = _served_name(name)
            with self._store.transaction(read_only=True) as uow:
                return bool(self._holdings(uow, puller, wanted))
        except (NameInvalid, NameAmbiguous):
            return False

    def tags(
        self,
        puller: Puller,
        name: str,
        *,
        upstream: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> Page:
        """The tags served under `name`, in lexical order, `limit` of them after `after`."""
        wanted = _served_name(name, upstream)
        with self._store.transaction(read_only=True) as uow:
            holdings = self._holdings(uow, puller, wanted)
        if not holdings:
            raise NameUnknown(f"repository {name} is not known")
        tags = {h.reference.tag for h in holdings if h.reference.tag and h.image.digest}
        return _page(sorted(tags), limit, after)

    def catalog(
        self, puller: Puller, *, limit: int | None = None, after: str | None = None
    ) -> Page:
        """Every repository the puller may pull from, by its name without registry host."""
        with self._store.transaction(read_only=True) as uow:
            caches = uow.caches.available(self._project_ids(uow, puller))
        names = {h.reference.repository for cache in caches for h in _images_of(cache)}
        return _page(sorted(names), limit, after)

    # --- last use ---------------------------------------------------------------------------

    def use_due(self, cache_id: str) -> bool:
        """Whether a pull from `cache_id` should be recorded now; at most once per interval per
        cache in this process, so most pulls cost no write at all."""
        now = time.monotonic()
        with self._use_lock:
            last = self._last_recorded.get(cache_id)
            if last is not None and now - last < self._use_interval:
                return False
            self._last_recorded[cache_id] = now
            return True

    def record_use(self, cache_id: str) -> None:
        with self._store.transaction() as uow:
            uow.caches.record_use(cache_id, self._clock.now())

    # --- helpers ----------------------------------------------------------------------------

    def _project_ids(self, uow: UnitOfWork, puller: Puller) -> Sequence[str]:
        if puller.project_id is not None:
            return (puller.project_id,)
        return uow.identity.anonymous_pull_projects()

    def _holdings(self, uow: UnitOfWork, puller: Puller, wanted: ServedName) -> list[_Holding]:
        """Every image served under `wanted` in the caches `puller` may see, newest cache first.

        A project's own pull-through caches count while they are built: their manifests came
        from its upstream when the pull-through made them (their blobs are served only once
        its upstream has shown them, see PullThrough)."""
        caches = [
            cache
            for cache in uow.caches.available(
                self._project_ids(uow, puller), building_of=puller.project_id
            )
            if cache.status is CacheStatus.AVAILABLE or is_pull_through(cache)
        ]
        holdings = [
            holding
            for cache in caches
            for holding in _images_of(cache)
            if wanted.serves(holding.reference)
        ]
        if puller.anonymous:
            _check_one_upstream(wanted, holdings)
        return holdings

    def _manifest_bytes(self, digest: str) -> bytes:
        try:
            return self._blobs.read_bytes(digest, MAX_MANIFEST_BYTES)
        except (FileNotFoundError, BlobCorrupt):
            raise ManifestUnknown(f"manifest {digest} is missing from the blob store") from None

    def _platform_manifest(
        self,
        uow: UnitOfWork,
        cache: ImageCache,
        index_body: bytes,
        index_type: str,
        name: str,
        tag: str,
    ) -> ServedManifest:
        try:
            children = select_platforms(
                parse_manifest(index_body, index_type), (self._default_platform,)
            )
        except ManifestError:
            children = ()
        for child in children:
            recorded = uow.blob_refs.owners_of(child.digest, [cache.id]).get(cache.id)
            if recorded is not None and recorded.media_type in IMAGE_TYPES:
                body = self._manifest_bytes(child.digest)
                return ServedManifest(body, recorded.media_type, child.digest, cache.id)
        raise ManifestUnknown(
            f"{name}:{tag} is an index without a {self._default_platform} manifest in the "
            "cache, and the client accepts no index"
        )


def _served_name(name: str, upstream: str | None = None) -> ServedName:
    try:
        return served_name(name, upstream)
    except InvalidInput as error:
        raise NameInvalid(error.message, field="name") from None


def _is_digest(reference: str) -> bool:
    if ":" not in reference:
        return False
    if not DIGEST_RE.match(reference):
        raise DigestInvalid(f"{reference!r} is not a sha256 digest", field="digest")
    return True


def _images_of(cache: ImageCache) -> list[_Holding]:
    holdings = []
    for image in cache.images:
        try:
            reference = parse_reference(image.image)
        except InvalidInput:
            continue  # validated when the cache was created; never served if that changed
        holdings.append(_Holding(cache, reference, image))
    return holdings


def _check_one_upstream(wanted: ServedName, holdings: list[_Holding]) -> None:
    """Across projects, a name served from two upstreams answers to neither (a project could
    otherwise shadow another's image by caching a same-named one from a registry it runs)."""
    projects = {holding.cache.project_id for holding in holdings}
    upstreams = sorted({f"{h.reference.registry}/{h.reference.repository}" for h in holdings})
    if len(projects) > 1 and len(upstreams) > 1:
        raise NameAmbiguous(
            f"repository {wanted.text} is served from several upstreams "
            f"({', '.join(upstreams)}): pull it by one of these names, or with ?ns= "
            "naming the registry"
        )


def _unique_caches(holdings: list[_Holding]) -> list[ImageCache]:
    seen: dict[str, ImageCache] = {}
    for holding in holdings:
        seen.setdefault(holding.cache.id, holding.cache)
    return list(seen.values())


def _wants_platform_manifest(media_type: str, accepted: frozenset[str]) -> bool:
    if media_type not in INDEX_TYPES or not accepted or "*/*" in accepted:
        return False
    return media_type not in accepted and bool(accepted & IMAGE_TYPES)


def _page(items: list[str], limit: int | None, after: str | None) -> Page:
    if after is not None:
        items = [item for item in items if item > after]
    if limit is None or len(items) <= limit:
        return Page(items, more=False)
    return Page(items[:limit], more=True)
