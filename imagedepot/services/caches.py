"""Image cache use cases shared by every dialect: create, read, list, request deletion.

Building and deleting happen in the worker; these calls only record intent, so
every request returns at once and is safe to retry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from imagedepot.domain.caches import CacheSpec, FieldNames, ImageCache
from imagedepot.domain.errors import Conflict, NotFound, QuotaExceeded
from imagedepot.domain.identity import Principal
from imagedepot.ports import Clock, MetadataStore

SAVE_ATTEMPTS = 5


@dataclass(frozen=True)
class Quotas:
    """Per project; the defaults follow the clouds (CCE allows 50 caches per tenant)."""

    caches: int = 50
    images: int = 1000
    gib: int = 20000


class CacheService:
    def __init__(self, store: MetadataStore, clock: Clock, quotas: Quotas | None = None) -> None:
        self._store = store
        self._clock = clock
        self._quotas = quotas or Quotas()

    def create(
        self,
        principal: Principal,
        spec: CacheSpec,
        *,
        max_images: int | None = None,
        field_names: FieldNames | None = None,
    ) -> ImageCache:
        if max_images is None:
            spec.validate(field_names=field_names)
        else:
            spec.validate(max_images=max_images, field_names=field_names)
        cache = ImageCache.new(principal.project_id, spec, self._clock.now())
        with self._store.transaction() as uow:
            self._check_quotas(uow.caches.list(principal.project_id), spec)
            uow.caches.add(cache)
        return cache

    def _check_quotas(self, existing: list[ImageCache], spec: CacheSpec) -> None:
        quotas = self._quotas
        if len(existing) + 1 > quotas.caches:
            raise QuotaExceeded(f"quota exceeded: the project may hold {quotas.caches} caches")
        images = sum(len(cache.spec.images) for cache in existing) + len(spec.images)
        if images > quotas.images:
            raise QuotaExceeded(
                f"quota exceeded: the project may cache {quotas.images} images in all, "
                f"this would make {images}"
            )
        gib = sum(cache.spec.size_gib for cache in existing) + spec.size_gib
        if gib > quotas.gib:
            raise QuotaExceeded(
                f"quota exceeded: the project's caches may total {quotas.gib} GiB, "
                f"this would make {gib} GiB"
            )

    def get(self, principal: Principal, cache_id: str) -> ImageCache:
        with self._store.transaction(read_only=True) as uow:
            cache = uow.caches.get(cache_id, principal.project_id)
        if cache is None:
            raise NotFound(f"image cache {cache_id} not found")
        return cache

    def list(self, principal: Principal, name: str | None = None) -> list[ImageCache]:
        with self._store.transaction(read_only=True) as uow:
            return uow.caches.list(principal.project_id, name)

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
    ) -> ImageCache:
        """Apply `change` (labels, annotations; it may raise to refuse) and save it.

        With `expected_version`, the caller read that version: a newer one is a Conflict
        instead of a silent overwrite (optimistic concurrency).
        """
        for _ in range(SAVE_ATTEMPTS):
            with self._store.transaction() as uow:
                cache = uow.caches.get(cache_id, principal.project_id)
                if cache is None:
                    raise NotFound(f"image cache {cache_id} not found")
                read_version = cache.resource_version
                if expected_version is not None and expected_version != read_version:
                    raise Conflict(
                        "the object has been modified; please apply your changes to the "
                        "latest version and try again"
                    )
                change(cache)
                if cache.resource_version == read_version:
                    return cache
                if uow.caches.save(cache, read_version):
                    return cache
                if expected_version is not None:
                    expected_version = -1
        raise Conflict(f"image cache {cache_id} is changing too fast; retry the update")

    def request_deletion(
        self,
        principal: Principal,
        cache_id: str,
        precondition: Callable[[ImageCache], None] | None = None,
    ) -> ImageCache:
        """Mark the cache Deleting (idempotent); the worker releases its blobs and removes it.

        `precondition` sees the stored cache inside the transaction and may raise to refuse.
        """
        for _ in range(SAVE_ATTEMPTS):
            with self._store.transaction() as uow:
                cache = uow.caches.get(cache_id, principal.project_id)
                if cache is None:
                    raise NotFound(f"image cache {cache_id} not found")
                if precondition is not None:
                    precondition(cache)
                read_version = cache.resource_version
                if not cache.request_deletion(self._clock.now()):
                    return cache
                if uow.caches.save(cache, read_version):
                    return cache
        raise Conflict(f"image cache {cache_id} is changing too fast; retry the deletion")
