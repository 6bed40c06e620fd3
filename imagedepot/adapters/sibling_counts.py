"""Where the processes of one `serve --processes N` leave what they have counted, so that a
`/metrics` scrape, which reaches any one of them, can show the sum over all.

Each process replaces its own file (`<pid>.json`, written whole and renamed, so a reader
never sees half of one) every second and on its way out. Files of processes that have ended
are still read: a counter must not fall because the process that counted has been replaced.
The supervisor empties the directory when it starts, which is when counters start again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class SiblingCounts:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def clear(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.iterdir():
            leftover.unlink(missing_ok=True)

    def write(self, snapshot: dict[str, Any]) -> None:
        pid = os.getpid()
        staged = self.directory / f".{pid}.json.tmp"
        staged.write_text(json.dumps(snapshot))
        staged.replace(self.directory / f"{pid}.json")

    def others(self) -> list[Any]:
        """Every other process's last snapshot (unreadable ones left out)."""
        mine = f"{os.getpid()}.json"
        found: list[Any] = []
        try:
            paths = sorted(self.directory.glob("*.json"))
        except OSError:
            return found
        for path in paths:
            if path.name == mine:
                continue
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return found
