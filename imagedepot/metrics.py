"""Prometheus metrics of one server process: counters and a histogram kept in memory, and
the text exposition format (version 0.0.4) they are scraped in.

Kept dependency-free and apart from the layers: the HTTP middleware and the worker record
into it, `/metrics` renders it together with the gauges read from the store.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: Labels = ()) -> str:
    pairs = (*labels, *extra)
    if not pairs:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in pairs) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self._values: dict[Labels, float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def render(self) -> list[str]:
        with self._lock:
            values = sorted(self._values.items())
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        return lines + [f"{self.name}{_labels(key)} {_number(v)}" for key, v in values]


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name, self.help = name, help_text
        self._bounds = (*sorted(buckets), math.inf)
        self._series: dict[Labels, tuple[list[int], float]] = {}
        self._lock = threading.Lock()

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            counts, total = self._series.get(key, ([0] * len(self._bounds), 0.0))
            for index, bound in enumerate(self._bounds):
                if value <= bound:
                    counts[index] += 1
            self._series[key] = (counts, total + value)

    def render(self) -> list[str]:
        with self._lock:
            series = sorted((key, (list(c), t)) for key, (c, t) in self._series.items())
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, (counts, total) in series:
            for bound, count in zip(self._bounds, counts, strict=True):
                le = (("le", _number(bound)),)
                lines.append(f"{self.name}_bucket{_labels(key, le)} {count}")
            lines.append(f"{self.name}_sum{_labels(key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(key)} {counts[-1]}")
        return lines


def gauge_lines(name: str, help_text: str, values: Iterable[tuple[Labels, float]]) -> list[str]:
    """A gauge read at scrape time (from the store), in the exposition format."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    return lines + [f"{name}{_labels(key)} {_number(v)}" for key, v in values]


class Metrics:
    """What this process counts; one instance shared by its ports and its worker."""

    def __init__(self) -> None:
        self.http_requests = Counter(
            "imagedepot_http_requests_total",
            "HTTP requests answered, by port (api, registry) and status code class.",
        )
        self.registry_blob_bytes = Counter(
            "imagedepot_registry_blob_bytes_total",
            "Bytes of blobs the registry port answered with (whole blobs and ranges).",
        )
        self.builds = Counter(
            "imagedepot_cache_builds_total",
            "Cache builds this process finished, by outcome (available, failed, timeout).",
        )
        self.build_seconds = Histogram(
            "imagedepot_cache_build_seconds",
            "How long the cache builds this process finished took.",
            (1, 5, 15, 60, 300, 900, 3600, 14400),
        )

    def render(self, gauges: Iterable[list[str]] = ()) -> str:
        lines: list[str] = []
        for block in (
            *gauges,
            self.http_requests.render(),
            self.registry_blob_bytes.render(),
            self.builds.render(),
            self.build_seconds.render(),
        ):
            lines += block
        return "\n".join(lines) + "\n"
