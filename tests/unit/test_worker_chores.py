"""A housekeeping chore throttled to once per interval."""

from __future__ import annotations

import time

from imagedepot.worker.loop import at_most_every


def test_a_throttled_chore_waits_its_interval() -> None:
    runs: list[float] = []
    chore = at_most_every(0.2, lambda: runs.append(time.monotonic()))
    chore()
    assert runs == [], "the worker's start already ran it"
    time.sleep(0.25)
    chore()
    chore()
    assert len(runs) == 1
    time.sleep(0.25)
    chore()
    assert len(runs) == 2
