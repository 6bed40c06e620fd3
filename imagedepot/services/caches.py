"""Image cache use cases shared by every dialect: create, read, list, request deletion.

Building and deleting happen in the worker; these calls only record intent, so
every request returns at once and is safe to retry. What can be known at once is checked
here, for every dialect alike: a spec naming a pull secret the project does not hold is
refused when it is created or respecified, not left to fail its build "without credentials".
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from imagedepot.domain.caches import CacheChange, CacheSpec, FieldNames, ImageCache
from imagedepot.domain.errors import Conflict, Gone, InvalidInput, NotFound, QuotaExceeded
from imagedepot.domain.identity import Principal
from imagedepot.domain.upstreams import is_pull_through
from imagedepot.ports import Clock, MetadataStore, UnitOfWork
from imagedepot.services.saving import LOST_RACE, LostRace, save_with_retries

SAVE_ATTEMPTS = 5
CHANGES_KEPT = timedelta(minutes=15)
"""How long the change log keeps a write: a watcher that falls further behind relists."""
COMPACT_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Quotas:
    """Per project; the defaults follow the clouds (CCE allows 50 caches per tenant)."""

    caches: int = 50
    images: int = 1000
    gib: int = 20000

    def check(self, existing: list[ImageCache], spec: CacheSpec) -> None:
        """QuotaExceeded (naming the quota) when adding `spec` to `existing` goes over one."""
        if len(existing) + 1 > self.caches:
            raise QuotaExceeded(f"quota exceeded: the project may hold {self.caches} caches")
        images = sum(len(cache.spec.images) for cache in existing) + len(spec.images)
        if images > self.images:
            raise QuotaExceeded(
                f"quota exceeded: the project may cache {self.images} images in all, "
                f"this would make {images}"
            )
        gib = sum(cache.spec.size_gib for cache in existing) + spec.size_gib
        if gib > self.gib:
            raise QuotaExceeded(
                f"quota exceeded: the project's caches may total {self.gib} GiB, "
                f"this would make {gib} GiB"
            )


def _project_cache(uow: UnitOfWork, principal: Principal, cache_id: str) -> ImageCache:
    """The caller's project's cache `cache_id`; NotFound when it has none by that id."""
    cache = uow.caches.get(cache_id, principal.project_id)
    if cache is None:
        raise NotFound(f"image cache {cache_id} not found")
    return cache


def _check_pull_secrets(
    uow: UnitOfWork, project_id: str, spec: CacheSpec, names: FieldNames
) -> None:
    """InvalidInput naming the field (in the caller's spelling) of the first pull secret the
    spec names that the project does not hold."""
    named = [(f"{names.pull_secrets}[{i}]", ref) for i, ref in enumerate(spec.pull_secrets)]
    named += [
        (names.registry_pull_secret.format(index=i), entry.pull_secret)
        for i, entry in enumerate(spec.registries)
        if entry.pull_secret
    ]
    for where, ref in named:
        namespace, _, name = ref.partition(":")
        if uow.secrets.get(project_id, namespace, name) is None:
            raise InvalidInput(
                f"{where}: pull secret {name!r} does not exist in namespace {namespace!r} of "
                "this project; create it first (imagedepot secrets create-docker-registry, "
                f"or POST /api/v1/namespaces/{namespace}/secrets)",
                field=where,
            )


class CacheService:
    def __init__(self, store: MetadataStore, clock: Clock, quotas: Quotas | None = None) -> None:
        self._store = store
        self._clock = clock
        self._quotas = quotas or Quotas()
        self._next_compaction = clock.now()

    def create(
        self,
        principal: Principal,
        spec: CacheSpec,
        *,
        max_images: int | None = None,
        field_names: FieldNames | None = None,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        finalizers: list[str] | None = None,
    ) -> ImageCache:
        """Record a new cache for the worker to build (with the dialect's metadata, if any)."""
        if max_images is None:
            spec.validate(field_names=field_names)
        else:
            spec.validate(max_images=max_images, field_names=field_names)
        cache = ImageCache.new(principal.project_id, spec, self._clock.now())
        cache.labels = dict(labels or {})
        cache.annotations = dict(annotations or {})
        cache.finalizers = list(finalizers or [])
        with self._store.transaction() as uow:
            _check_pull_secrets(uow, principal.project_id, spec, field_names or FieldNames())
            # Pull-through caches come and go with pulls; the byte quota bounds them.
            made = [c for c in uow.caches.list(principal.project_id) if not is_pull_through(c)]
            self._quotas.check(made, spec)
            uow.caches.add(cache)
        return cache

    def check_pull_secrets(
        self, principal: Principal, spec: CacheSpec, field_names: FieldNames | None = None
    ) -> None:
        """What `create` checks of the pull secrets, for a dry run that stores nothing."""
        with self._store.transaction(read_only=True) as uow:
            _check_pull_secrets(uow, principal.project_id, spec, field_names or FieldNames())

    def get(self, principal: Principal, cache_id: str) -> ImageCache:
        with self._store.transaction(read_only=True) as uow:
            return _project_cache(uow, principal, cache_id)

    def list(self, principal: Principal, name: str | None = None) -> list[ImageCache]:
        with self._store.transaction(read_only=True) as uow:
            return uow.caches.list(principal.project_id, name)

    def list_at_revision(self, principal: Principal) -> tuple[builtins.list[ImageCache], int]:
        """The project's caches and the store revision they are current at (one snapshot)."""
        with self._store.transaction(read_only=True) as uow:
            return uow.caches.list(principal.project_id), uow.caches.revision()

    def get_at_revision(self, principal: Principal, cache_id: str) -> tuple[ImageCache, int]:
        """One cache and the store revision it is current at (one snapshot)."""
        with self._store.transaction(read_only=True) as uow:
            return _project_cache(uow, principal, cache_id), uow.caches.revision()

    def changes(
        self, principal: Principal, after: int, limit: int = 500
    ) -> tuple[builtins.list[CacheChange], int]:
        """The project's changes after revision `after` (at most `limit`) and the revision the
        caller has then caught up to. Gone when that history is no longer kept, or when
        `after` is a revision the store never reached."""
        with self._store.transaction(read_only=True) as uow:
            head = uow.caches.revision()
            compacted = uow.caches.compacted_revision()
            if after < compacted:
                raise Gone(f"too old resource version: {after} ({compacted})")
            if after > head:
                raise Gone(f"too large resource version: {after}, current: {head}")
            changes = uow.caches.changes_after(principal.project_id, after, limit)
        caught_up = changes[-1].revision if len(changes) == limit else head
        return changes, caught_up

    def forget_changes(self) -> int:
        """Drop change-log entries older than CHANGES_KEPT; a worker chore, which does its
        work at most once every COMPACT_EVERY."""
        now = self._clock.now()
        if now < self._next_compaction:
            return 0
        self._next_compaction = now + COMPACT_EVERY
        with self._store.transaction() as uow:
            return uow.caches.compact_changes(now - CHANGES_KEPT)

    def get_by_name(self, principal: Principal, name: str) -> ImageCache:
        """The project's cache called `name` (names are unique within a project)."""
        found = self.list(principal, name)
        if not found:
            raise NotFound(f"image cache {name!r} not found")
        return found[0]

    def update_metadata(
        self,
        principal: Principal,
        cache_id: str,
        change: Callable[[ImageCache], None],
        expected_version: int | None = None,
        field_names: FieldNames | None = None,
    ) -> ImageCache:
        """Apply `change` (labels, annotations, finalizers, or a new spec while nothing is
        built; it may raise to refuse) and save it. A deleted cache whose last finalizer this
        removes goes away. A new spec must name pull secrets the project holds, as at create
        (errors name the fields as `field_names` spell them).

        With `expected_version`, the caller read that version: a newer one is a Conflict
        instead of a silent overwrite (optimistic concurrency).
        """

        def attempt(uow: UnitOfWork) -> ImageCache | LostRace:
            nonlocal expected_version
            cache = _project_cache(uow, principal, cache_id)
            read_version, read_generation = cache.resource_version, cache.generation
            if expected_version is not None and expected_version != read_version:
                raise Conflict(
                    "the object has been modified; please apply your changes to the "
                    "latest version and try again"
                )
            change(cache)
            if cache.resource_version == read_version:
                return cache
            if cache.generation != read_generation:
                names = field_names or FieldNames()
                _check_pull_secrets(uow, principal.project_id, cache.spec, names)
            if not uow.caches.save(cache, read_version):
                if expected_version is not None:
                    # The version the caller read is stale now: the next attempt refuses.
                    expected_version = -1
                return LOST_RACE
            if cache.removable:
                uow.caches.remove(cache.id, self._clock.now())
            return cache

        return save_with_retries(
            self._store,
            attempt,
            attempts=SAVE_ATTEMPTS,
            give_up=Conflict(f"image cache {cache_id} is changing too fast; retry the update"),
        )

    def request_deletion(
        self,
        principal: Principal,
        cache_id: str,
        precondition: Callable[[ImageCache], None] | None = None,
        grace_seconds: int | None = None,
    ) -> ImageCache:
        """Mark the cache Deleting (idempotent); the worker releases its blobs and removes it
        once no finalizer holds it.

        `precondition` sees the stored cache inside the transaction and may raise to refuse.
        """

        def attempt(uow: UnitOfWork) -> ImageCache | LostRace:
            cache = _project_cache(uow, principal, cache_id)
            if precondition is not None:
                precondition(cache)
            read_version = cache.resource_version
            if not cache.request_deletion(self._clock.now(), grace_seconds):
                return cache
            return cache if uow.caches.save(cache, read_version) else LOST_RACE

        return save_with_retries(
            self._store,
            attempt,
            attempts=SAVE_ATTEMPTS,
            give_up=Conflict(f"image cache {cache_id} is changing too fast; retry the deletion"),
        )
