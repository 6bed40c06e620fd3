"""Abuse limits at the door: a per-credential request rate, failed authentications per
client address, and a request body size.

The limiters are token buckets in memory: each server process enforces its own share, which
is what a limit against runaway scripts and password guessing needs.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable

from starlette.requests import Request

from imagedepot.domain.errors import PayloadTooLarge, RateLimited


class RateLimiter:
    """`rate` requests per second on average, bursts of up to `burst`; rate 0 disables it."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = max(1, burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Take one token, or raise RateLimited when the credential has none left."""
        self._take(key, "requests from this credential", spend=True)

    def refuse_if_empty(self, key: str, what: str) -> None:
        """Raise RateLimited when `key` has no token left, without spending one."""
        self._take(key, what, spend=False)

    def spend(self, key: str) -> None:
        """Take one token if there is one (recording an event, never refusing it)."""
        with contextlib.suppress(RateLimited):
            self._take(key, "", spend=True)

    def _take(self, key: str, what: str, *, spend: bool) -> None:
        if self._rate <= 0:
            return
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self._burst), now))
            tokens = min(float(self._burst), tokens + (now - last) * self._rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                wait = math.ceil((1 - tokens) / self._rate)
                raise RateLimited(f"too many {what}; retry in {wait} s", retry_after=wait)
            self._buckets[key] = (tokens - 1 if spend else tokens, now)
            if len(self._buckets) > 100_000:
                self._forget_full_buckets(now)

    def _forget_full_buckets(self, now: float) -> None:
        full = [
            key
            for key, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self._rate >= self._burst
        ]
        for key in full:
            del self._buckets[key]


class AuthFailureLimiter:
    """Failed authentications per client address. Once an address has failed `burst` times
    (forgiven at `rate` per second) every request from it is refused with 429 before its
    credentials are looked at, so guessing tokens, passwords or secret keys gets nowhere."""

    WHAT = "failed authentications from this address"

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._bucket = RateLimiter(rate, burst, clock)

    def check(self, remote: str | None) -> None:
        self._bucket.refuse_if_empty(remote or "unknown", self.WHAT)

    def failed(self, remote: str | None) -> None:
        self._bucket.spend(remote or "unknown")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing one over `limit` bytes before reading it where the length is
    declared, and as soon as it grows past the limit otherwise."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
