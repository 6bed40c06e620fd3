"""The worker loop: claims caches that need work under a lease and reconciles them.

Leases make the worker safe to run in several processes: a lease held by a
process that died on this host is taken over at once, any other when it
expires. Expired caches are moved to Deleting here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from imagedepot.domain.caches import CacheStatus, FailureReason, ImageCache
from imagedepot.ports import BlobStore, Clock, MetadataStore, StoreUnavailable
from imagedepot.worker.reconciler import Reconciler

log = logging.getLogger(__name__)


def at_most_every(seconds: float, chore: Callable[[], object]) -> Callable[[], object]:
    """`chore` as a housekeeping step that runs once per `seconds`, the first time `seconds`
    from now: for sweeps too costly to run on every tick."""
    last = [time.monotonic()]

    def maybe() -> object:
        now = time.monotonic()
        if now - last[0] < seconds:
            return None
        last[0] = now
        return chore()

    return maybe


class WorkerLoop:
    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        clock: Clock,
        holder: str,
        lease_seconds: float,
        poll_seconds: float,
        *,
        dead_holders: Callable[[list[str]], tuple[str, ...]],
        max_concurrent: int = 2,
        housekeeping: Sequence[Callable[[], object]] = (),
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._clock = clock
        self.holder = holder
        self._lease = timedelta(seconds=lease_seconds)
        self._poll = poll_seconds
        self._max_concurrent = max_concurrent
        self._running: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self.reconciler: Reconciler | None = None
        self._housekeeping = tuple(housekeeping)
        self._dead_holders = dead_holders
        """Which of the lease holders are dead processes: their leases are free at once."""

    def renew_lease(self, cache_id: str) -> bool:
        with self._store.transaction() as uow:
            return uow.caches.renew(cache_id, self.holder, self._clock.now() + self._lease)

    def wake(self) -> None:
        """Look for work now rather than at the next poll (called after an API change)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        removed = await asyncio.to_thread(self._blobs.clean_temporary)
        if removed:
            log.info("removed %d temporary files left by an earlier run", removed)
        while not stop.is_set():
            try:
                await self.tick()
            except StoreUnavailable as error:
                log.warning("worker tick: %s; retrying", error)
            except Exception:
                log.exception("worker tick failed; retrying")
            self._wake.clear()
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())}
            await asyncio.wait(waiters, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        running = dict(self._running)
        for task in running.values():
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)
        await asyncio.to_thread(self._release_all, list(running))

    async def tick(self) -> None:
        await asyncio.to_thread(self._expire)
        for chore in self._housekeeping:
            await asyncio.to_thread(chore)
        while len(self._running) < self._max_concurrent:
            cache = await asyncio.to_thread(self._claim)
            if cache is None:
                return
            task = asyncio.create_task(self._reconcile(cache.id, cache))
            self._running[cache.id] = task

    async def _reconcile(self, cache_id: str, cache: ImageCache) -> None:
        assert self.reconciler is not None
        try:
            await self.reconciler.reconcile(cache)
        except Exception:
            # Keep the lease: the cache is retried once it expires, not in a hot loop.
            log.exception("reconciling cache %s failed; retrying after the lease expires", cache_id)
            self._running.pop(cache_id, None)
            return
        except asyncio.CancelledError:
            self._running.pop(cache_id, None)
            raise
        self._running.pop(cache_id, None)
        await asyncio.to_thread(self._release, cache_id)
        self._wake.set()

    def _claim(self) -> ImageCache | None:
        now = self._clock.now()
        with self._store.transaction(read_only=True) as uow:
            dead = self._dead_holders(uow.caches.lease_holders())
        with self._store.transaction() as uow:
            return uow.caches.claim(
                (CacheStatus.CREATING, CacheStatus.DELETING),
                self.holder,
                now,
                now + self._lease,
                dead,
                refresh_due=True,
            )

    def _release(self, cache_id: str) -> None:
        with self._store.transaction() as uow:
            uow.caches.release(cache_id, self.holder)

    def _release_all(self, cache_ids: list[str]) -> None:
        for cache_id in cache_ids:
            self._release(cache_id)

    def _expire(self) -> None:
        now = self._clock.now()
        with self._store.transaction(read_only=True) as uow:
            expired = uow.caches.expired(now)
        for cache in expired:
            with self._store.transaction() as uow:
                current = uow.caches.get(cache.id)
                if current is None:
                    continue
                version = current.resource_version
                current.mark_unavailable(FailureReason.EXPIRED, "retention period ended", now)
                current.request_deletion(now)
                uow.caches.save(current, version)
                log.info("cache %s expired; deleting", cache.id)
