"""Drives one cache to where its status says it should go, idempotently.

`Creating` builds (resuming after a crash: blobs already stored are kept),
`Deleting` releases the cache's blobs and removes it (or, while other parties' finalizers
hold it, marks its data released and leaves the record to them). Every write re-reads the
cache and saves with its resource version, so an API call that lands meanwhile
(a deletion during a build) always wins cleanly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeGuard

from imagedepot.domain.caches import CacheStatus, FailureReason, ImageCache, ImageProgress
from imagedepot.domain.errors import Unreadable
from imagedepot.domain.references import parse_reference
from imagedepot.ports import (
    BlobStoreUnavailable,
    Clock,
    MetadataStore,
    RegistryCredentials,
    UnitOfWork,
)
from imagedepot.services.blobs import BlobService
from imagedepot.services.building import BuildFailed, BuildPolicy, BuildStopped, CacheBuilder
from imagedepot.services.saving import LOST_RACE, LostRace, save_with_retries
from imagedepot.services.secrets import SecretService

log = logging.getLogger(__name__)
SAVE_ATTEMPTS = 10
NEXT_GENERATION = "#next"
"""Appended to a cache's id: the owner of the references of the generation a refresh builds."""


class Reconciler:
    def __init__(
        self,
        store: MetadataStore,
        clock: Clock,
        builder: CacheBuilder,
        blob_service: BlobService,
        secrets: SecretService,
        policy: BuildPolicy,
        renew_lease: Callable[[str], bool],
        on_build_finished: Callable[[str, float], None] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._builder = builder
        self._blob_service = blob_service
        self._secrets = secrets
        self._policy = policy
        self._renew_lease = renew_lease
        self._on_build_finished = on_build_finished or (lambda outcome, seconds: None)

    async def reconcile(self, cache: ImageCache) -> None:
        if cache.status is CacheStatus.DELETING:
            await asyncio.to_thread(self.delete, cache.id)
        elif cache.status is CacheStatus.CREATING:
            await self.build(cache)
        elif cache.status is CacheStatus.AVAILABLE and cache.refresh_due_at is not None:
            await self.refresh(cache)

    async def refresh(self, cache: ImageCache) -> None:
        """Re-resolve the cache's tags; when one moved, build the next generation beside the
        current one (which stays served) and switch to it once it is whole."""
        try:
            logins = await asyncio.to_thread(self._logins, cache)
        except Unreadable as error:
            errors: dict[str, str | None] = dict.fromkeys(cache.spec.images, error.message)
            await asyncio.to_thread(self._note_refresh, cache, errors)
            return
        moved, errors = await self._builder.moved_tags(cache, logins.get)
        if not moved:
            await asyncio.to_thread(self._note_refresh, cache, errors)
            return
        before = {p.image: p.digest for p in cache.images}
        next_owner = f"{cache.id}{NEXT_GENERATION}"
        log.info("cache %s: tags moved (%s); building its next generation", cache.id, moved)

        async def checkpoint(_: list[ImageProgress]) -> bool:
            return await asyncio.to_thread(self._still_current, cache)

        try:
            images = await asyncio.wait_for(
                self._builder.build(cache, logins.get, checkpoint, owner=next_owner),
                timeout=cache.spec.timeout_minutes * 60,
            )
        except BuildStopped:
            await asyncio.to_thread(self._drop_owner, next_owner)
            return
        except (BuildFailed, BlobStoreUnavailable, TimeoutError) as error:
            message = getattr(error, "message", None) or str(error) or "timed out"
            log.warning("cache %s: its next generation failed: %s", cache.id, message)
            await asyncio.to_thread(self._drop_owner, next_owner)
            failed = {image: f"refresh failed: {message}" for image in moved}
            await asyncio.to_thread(self._note_refresh, cache, {**errors, **failed})
            return
        moved_from = {image: before.get(image) or "nothing" for image in moved}
        await asyncio.to_thread(self._advance, cache, next_owner, images, moved_from)

    async def build(self, cache: ImageCache) -> None:
        target = _Target(cache.id, cache.generation)
        try:
            logins = await asyncio.to_thread(self._logins, cache)
        except Unreadable as error:
            # Asking again cannot help (the box already re-read its keys): fail now, saying so.
            reason = FailureReason.SECRET_UNREADABLE
            if await asyncio.to_thread(self._fail, target, reason, error.message):
                self._on_build_finished("failed", 0.0)
            return

        async def checkpoint(images: list[ImageProgress]) -> bool:
            return await asyncio.to_thread(self._checkpoint, target, images)

        log.info("building cache %s (%s)", cache.spec.name, cache.id)
        started = time.monotonic()

        def finished(outcome: str) -> None:
            self._on_build_finished(outcome, time.monotonic() - started)

        try:
            images = await asyncio.wait_for(
                self._builder.build(cache, logins.get, checkpoint),
                timeout=cache.spec.timeout_minutes * 60,
            )
        except BuildStopped:
            log.info("cache %s stopped building", cache.id)
            return
        except BuildFailed as failure:
            if await asyncio.to_thread(self._fail, target, failure.reason, failure.message):
                finished("failed")
            return
        except BlobStoreUnavailable as error:
            # Past a minute of retries: say why rather than retry silently every lease.
            if await asyncio.to_thread(self._fail, target, FailureReason.STORAGE, str(error)):
                finished("failed")
            return
        except TimeoutError:
            message = f"build did not finish within {cache.spec.timeout_minutes} minutes"
            if await asyncio.to_thread(self._fail, target, FailureReason.TIMEOUT, message):
                finished("timeout")
            return
        available = await asyncio.to_thread(
            self._update, target, lambda c: c.mark_available(images, self._clock.now())
        )
        if not available:
            log.info("cache %s changed while building; its new spec is built next", cache.id)
            return
        finished("available")
        log.info("cache %s is available", cache.id)

    def delete(self, cache_id: str) -> None:
        """Release the cache's blobs (the service's finalizer), then remove the record unless
        another party's finalizer still holds it: then it stays, Deleting, until the last
        one is removed through the API."""
        released: list[str] = []

        def attempt(uow: UnitOfWork) -> str | LostRace:
            cache = uow.caches.get(cache_id)
            if cache is None:
                return "gone already"
            # Kept across attempts: the refs a lost attempt dropped are committed with it.
            released.extend(info.digest for info in uow.blob_refs.refs_of(cache_id))
            uow.blob_refs.drop_refs(cache_id)
            if not cache.data_released:
                # Dropping our own finalizer is a change of its own, as in a cluster.
                read_version = cache.resource_version
                cache.mark_data_released(self._clock.now())
                if not uow.caches.save(cache, read_version):
                    return LOST_RACE
            if cache.removable:
                uow.caches.remove(cache_id, self._clock.now())
                return "removed"
            return f"kept for finalizers {', '.join(cache.finalizers)}"

        outcome = save_with_retries(
            self._store, attempt, attempts=SAVE_ATTEMPTS, give_up="gone already"
        )
        removed = self._blob_service.collect(released)
        log.info(
            "cache %s deleted (%s); %d blobs released, %d removed",
            cache_id,
            outcome,
            len(released),
            len(removed),
        )

    def _still_current(self, cache: ImageCache) -> bool:
        """Keep the lease of a refresh while the cache is still Available at its generation."""
        if not self._renew_lease(cache.id):
            return False
        with self._store.transaction(read_only=True) as uow:
            current = uow.caches.get(cache.id)
        return _Target(cache.id, cache.generation).still(current, CacheStatus.AVAILABLE)

    def _note_refresh(self, cache: ImageCache, errors: dict[str, str | None]) -> None:
        def attempt(uow: UnitOfWork) -> bool | LostRace:
            current = uow.caches.get(cache.id)
            if current is None or current.status is not CacheStatus.AVAILABLE:
                return False
            version = current.resource_version
            current.note_refresh(errors, self._clock.now())
            return True if uow.caches.save(current, version) else LOST_RACE

        save_with_retries(self._store, attempt, attempts=SAVE_ATTEMPTS, give_up=False)

    def _advance(
        self,
        cache: ImageCache,
        next_owner: str,
        images: list[ImageProgress],
        moved_from: dict[str, str],
    ) -> None:
        """Serve the next generation: its references become the cache's in the transaction
        that records it; what only the previous one used is released."""

        def attempt(uow: UnitOfWork) -> list[str] | LostRace | None:
            current = uow.caches.get(cache.id)
            if not _Target(cache.id, cache.generation).still(current, CacheStatus.AVAILABLE):
                return None
            previous = {info.digest for info in uow.blob_refs.refs_of(cache.id)}
            following = uow.blob_refs.refs_of(next_owner)
            uow.blob_refs.drop_refs(cache.id)
            uow.blob_refs.add_refs(cache.id, following)
            uow.blob_refs.drop_refs(next_owner)
            version = current.resource_version
            current.advance(images, moved_from, self._clock.now())
            if not uow.caches.save(current, version):
                return LOST_RACE
            return sorted(previous - {info.digest for info in following})

        released = save_with_retries(self._store, attempt, attempts=SAVE_ATTEMPTS, give_up=None)
        if released is None:
            self._drop_owner(next_owner)  # the cache changed meanwhile: the build is moot
            return
        self._blob_service.collect(released)
        log.info("cache %s moved to its next generation", cache.id)

    def _drop_owner(self, owner: str) -> None:
        with self._store.transaction() as uow:
            released = [info.digest for info in uow.blob_refs.refs_of(owner)]
            uow.blob_refs.drop_refs(owner)
        self._blob_service.collect(released)

    def _logins(self, cache: ImageCache) -> dict[str, RegistryCredentials | None]:
        secret_refs = cache.spec.pull_secrets + tuple(
            entry.pull_secret for entry in cache.spec.registries if entry.pull_secret
        )
        hosts: set[str] = set()
        for image in cache.spec.images:
            registry = parse_reference(image).registry
            hosts.add(registry)
            hosts.update(self._policy.mirrors.get(registry, ()))
        return {
            host: self._secrets.credentials_for(cache.project_id, secret_refs, host)
            for host in hosts
        }

    def _checkpoint(self, target: _Target, images: list[ImageProgress]) -> bool:
        if not self._renew_lease(target.cache_id):
            return False
        return self._update(target, lambda c: c.record_progress(images, self._clock.now()))

    def _fail(self, target: _Target, reason: FailureReason, message: str) -> bool:
        """Record the failure and release the blobs; False when the cache no longer wants
        this build (deleted, or its spec changed meanwhile)."""
        log.warning("cache %s failed: %s", target.cache_id, message)
        if not self._update(target, lambda c: c.mark_failed(reason, message, self._clock.now())):
            return False
        with self._store.transaction() as uow:
            released = [info.digest for info in uow.blob_refs.refs_of(target.cache_id)]
            uow.blob_refs.drop_refs(target.cache_id)
        self._blob_service.collect(released)
        return True

    def _update(self, target: _Target, change: Callable[[ImageCache], None]) -> bool:
        """Apply `change` to the latest copy while the cache still wants this build (Creating,
        at the generation the build started from); False once it does not."""

        def attempt(uow: UnitOfWork) -> bool | LostRace:
            cache = uow.caches.get(target.cache_id)
            if not target.still(cache, CacheStatus.CREATING):
                return False
            read_version = cache.resource_version
            change(cache)
            return True if uow.caches.save(cache, read_version) else LOST_RACE

        return save_with_retries(self._store, attempt, attempts=SAVE_ATTEMPTS, give_up=False)


@dataclass(frozen=True)
class _Target:
    """What one build is for: the cache, at the generation (spec) it started from."""

    cache_id: str
    generation: int

    def still(self, cache: ImageCache | None, status: CacheStatus) -> TypeGuard[ImageCache]:
        """Whether `cache` (as read now) still wants this build: in `status`, at the same
        generation (not deleted, respecified or moved on meanwhile)."""
        return cache is not None and cache.status is status and cache.generation == self.generation
