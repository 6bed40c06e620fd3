"""A clock the test moves by hand, for rules that wait on time (retention, timeouts, how
long the change log lasts)."""

from __future__ import annotations

from datetime import UTC, datetime


class MovableClock:
    def __init__(self) -> None:
        self.current = datetime(2026, 3, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current
