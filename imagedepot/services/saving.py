"""Optimistic saves: read, change and save in a fresh transaction, again while a writer races us."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final, TypeVar

from imagedepot.domain.errors import Conflict
from imagedepot.ports import MetadataStore, UnitOfWork

T = TypeVar("T")


class LostRace(enum.Enum):
    LOST_RACE = "lost race"


LOST_RACE: Final = LostRace.LOST_RACE
"""What an attempt returns when its save found a newer version: try again."""


def save_with_retries(
    store: MetadataStore,
    attempt: Callable[[UnitOfWork], T | LostRace],
    *,
    attempts: int,
    give_up: T | Conflict,
) -> T:
    """Run `attempt` in a new transaction (committed once it returns, rolled back when it
    raises) up to `attempts` times, until it returns something other than LOST_RACE, and
    return that. When every attempt lost the race: raise `give_up` if it is a Conflict,
    else return it."""
    for _ in range(attempts):
        with store.transaction() as uow:
            result = attempt(uow)
        if not isinstance(result, LostRace):
            return result
    if isinstance(give_up, Conflict):
        raise give_up
    return give_up
