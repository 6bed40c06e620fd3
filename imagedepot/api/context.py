"""What every dialect needs from the core, handed in by `bootstrap`: the services and a way
to tell the worker there is new work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from imagedepot.api.auth import Gate
from imagedepot.services.caches import CacheService


@dataclass(frozen=True)
class ApiContext:
    gate: Gate
    caches: CacheService
    notify_worker: Callable[[], None]
