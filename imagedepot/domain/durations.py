"""Durations as operators write them in settings and specs: `90s`, `30m`, `6h`, `1d`."""

from __future__ import annotations

import re
from datetime import timedelta

from imagedepot.domain.errors import InvalidInput

_DURATION_RE = re.compile(r"^(\d{1,6})(s|m|h|d)\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: object, field_name: str) -> timedelta:
    match = _DURATION_RE.match(text) if isinstance(text, str) else None
    if match is None or int(match.group(1)) == 0:
        shown = text[:32] if isinstance(text, str) else text
        raise InvalidInput(
            f"{field_name}: {shown!r} is not a duration such as 90s, 30m, 6h or 1d",
            field=field_name,
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
