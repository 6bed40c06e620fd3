"""One download per blob across every worker of a deployment.

Builds in one process already share a download; workers on several machines claim the fetch
of a blob in the metadata store under a lease. A worker that finds the claim held waits for
the blob to land, and takes the claim over when its holder lets go (done or failed), its
lease runs out (a dead machine) or it is a dead process on this host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from imagedepot.ports import Clock, MetadataStore

DeadHolders = Callable[[list[str]], Sequence[str]]


class FetchClaims:
    def __init__(
        self,
        store: MetadataStore,
        clock: Clock,
        holder: str,
        lease: timedelta,
        dead_holders: DeadHolders = lambda holders: (),
    ) -> None:
        self._store = store
        self._clock = clock
        self._holder = holder
        self._lease = lease
        self._dead_holders = dead_holders

    @property
    def renew_every(self) -> float:
        """Seconds between renewals of a claim being worked on: well inside its lease."""
        return self._lease.total_seconds() / 3

    def claim(self, digest: str) -> bool:
        """Take the fetch of `digest`: True when it is ours."""
        with self._store.transaction(read_only=True) as uow:
            dead = self._dead_holders(uow.blob_fetches.holders())
        now = self._clock.now()
        with self._store.transaction() as uow:
            winner = uow.blob_fetches.claim(digest, self._holder, now, now + self._lease, dead)
        return winner == self._holder

    def renew(self, digest: str) -> bool:
        with self._store.transaction() as uow:
            return uow.blob_fetches.renew(digest, self._holder, self._clock.now() + self._lease)

    def release(self, digest: str) -> None:
        with self._store.transaction() as uow:
            uow.blob_fetches.release(digest, self._holder)
