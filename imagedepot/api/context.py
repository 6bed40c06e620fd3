"""What every dialect needs from the core, handed in by `bootstrap`: the services and a way
to tell the worker there is new work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from imagedepot.services.caches import CacheService
from imagedepot.services.identity import IdentityService


@dataclass(frozen=True)
class ApiContext:
    identity: IdentityService
    caches: CacheService
    notify_worker: Callable[[], None]
