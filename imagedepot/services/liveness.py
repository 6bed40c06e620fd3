"""Whether the process holding a lease, a fetch or an upload is still alive, wherever it runs.

Every process beats in the metadata store a few times per lease. A holder that has not beaten
for a whole lease is dead whatever host it was on (a machine that died takes no pid with it
that anyone could check); one on this host whose pid is gone is dead at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Final

from imagedepot.ports import Clock, MetadataStore

FORGET_AFTER: Final = timedelta(days=1)
"""Heartbeats older than this are dropped: their processes' holdings were long taken over."""


class Liveness:
    def __init__(
        self,
        store: MetadataStore,
        clock: Clock,
        me: str,
        lease: timedelta,
        dead_on_this_host: Callable[[list[str]], Sequence[str]],
    ) -> None:
        self._store = store
        self._clock = clock
        self._me = me
        self._lease = lease
        self._dead_on_this_host = dead_on_this_host

    @property
    def beat_every(self) -> float:
        """Seconds between beats: a third of a lease, so two missed beats are forgiven."""
        return self._lease.total_seconds() / 3

    def beat(self) -> None:
        now = self._clock.now()
        with self._store.transaction() as uow:
            uow.heartbeats.beat(self._me, now)
            uow.heartbeats.forget_silent(now - FORGET_AFTER)

    def dead(self, holders: list[str]) -> tuple[str, ...]:
        """Which of `holders` are dead processes (never this one)."""
        others = [holder for holder in dict.fromkeys(holders) if holder != self._me]
        if not others:
            return ()
        gone = set(self._dead_on_this_host(others))
        with self._store.transaction(read_only=True) as uow:
            gone.update(uow.heartbeats.silent(others, self._clock.now() - self._lease))
        return tuple(holder for holder in others if holder in gone)
