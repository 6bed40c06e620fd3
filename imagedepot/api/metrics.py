"""Prometheus metrics of one server process, and `/metrics` that serves them.

Counters and a histogram are kept in memory (the HTTP middleware below and the worker's
build callback record into them) and rendered in the text exposition format (version
0.0.4) together with gauges read from the store at scrape time; under `serve --processes N`
each count is summed with the sibling processes' snapshots. The page is public like
`/healthz`: it shows counts over every project and the processes' counters, never a name,
an id or a secret.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagedepot.api.auth import public
from imagedepot.services.inventory import Inventory, InventoryService

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: Labels = ()) -> str:
    pairs = (*labels, *extra)
    if not pairs:
        return ""
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in pairs) + "}"


def _labels_of(pairs: list[Any]) -> Labels:
    return tuple((str(name), str(value)) for name, value in pairs)


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

    def snapshot(self) -> list[Any]:
        with self._lock:
            return [[list(map(list, key)), value] for key, value in self._values.items()]

    def render(self, siblings: Iterable[list[Any]] = ()) -> list[str]:
        """This process's counts, plus those of sibling processes' snapshots."""
        with self._lock:
            merged = dict(self._values)
        for snapshot in siblings:
            for key, value in snapshot:
                labels = _labels_of(key)
                merged[labels] = merged.get(labels, 0) + float(value)
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        return lines + [
            f"{self.name}{_labels(key)} {_number(v)}" for key, v in sorted(merged.items())
        ]


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

    def snapshot(self) -> list[Any]:
        with self._lock:
            return [
                [list(map(list, key)), counts, total]
                for key, (counts, total) in self._series.items()
            ]

    def render(self, siblings: Iterable[list[Any]] = ()) -> list[str]:
        """This process's observations, plus those of sibling processes' snapshots."""
        with self._lock:
            merged = {key: (list(c), t) for key, (c, t) in self._series.items()}
        for snapshot in siblings:
            for key, counts, total in snapshot:
                labels = _labels_of(key)
                mine, my_total = merged.get(labels, ([0] * len(self._bounds), 0.0))
                if len(counts) != len(mine):
                    continue  # written by a process with other buckets (an upgrade underway)
                merged[labels] = (
                    [a + int(b) for a, b in zip(mine, counts, strict=True)],
                    my_total + float(total),
                )
        series = sorted(merged.items())
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
        self.pull_through_misses = Counter(
            "imagedepot_pull_through_misses_total",
            "Pulls of an image no cache held, resolved through a project's upstream.",
        )
        self.stale_serves = Counter(
            "imagedepot_pull_through_stale_serves_total",
            "Cached tags served because the upstream check failed, by reason (unreachable, "
            "upstream: 5xx, 429 or a timeout; not_found; unauthorized; moved_unavailable: "
            "the tag moved but its new content could not be pulled).",
        )
        self.build_seconds = Histogram(
            "imagedepot_cache_build_seconds",
            "How long the cache builds this process finished took.",
            (1, 5, 15, 60, 300, 900, 3600, 14400),
        )
        self.siblings: Callable[[], list[Any]] = list
        """Snapshots of the other processes serving with this one (none when alone)."""

    def _kept(self) -> dict[str, Counter | Histogram]:
        return {
            "http_requests": self.http_requests,
            "registry_blob_bytes": self.registry_blob_bytes,
            "builds": self.builds,
            "build_seconds": self.build_seconds,
            "pull_through_misses": self.pull_through_misses,
            "stale_serves": self.stale_serves,
        }

    def snapshot(self) -> dict[str, list[Any]]:
        """Everything this process counted, as JSON values a sibling process can add up."""
        return {name: kept.snapshot() for name, kept in self._kept().items()}

    def render(self, gauges: Iterable[list[str]] = ()) -> str:
        """The page: gauges, then each count summed over this process and its siblings (the
        other processes of one `serve --processes N`: a scrape reaches any one of them)."""
        siblings = [snapshot for snapshot in self.siblings() if isinstance(snapshot, dict)]
        lines: list[str] = []
        for block in gauges:
            lines += block
        for name, kept in self._kept().items():
            lines += kept.render(snapshot.get(name, []) for snapshot in siblings)
        return "\n".join(lines) + "\n"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def inventory_gauges(inventory: Inventory) -> list[list[str]]:
    return [
        gauge_lines(
            "imagedepot_caches",
            "Image caches by status, over every project.",
            [
                ((("status", status),), n)
                for status, n in sorted(inventory.caches_by_status.items())
            ],
        ),
        gauge_lines(
            "imagedepot_vm_images",
            "VM images by status, over every project (deleted ones left out).",
            [
                ((("status", status),), n)
                for status, n in sorted(inventory.vm_images_by_status.items())
            ],
        ),
        gauge_lines(
            "imagedepot_blobs", "Distinct blobs some cache or image uses.", [((), inventory.blobs)]
        ),
        gauge_lines(
            "imagedepot_blob_bytes", "Bytes of the blobs in use.", [((), inventory.blob_bytes)]
        ),
    ]


def metrics_routes(metrics: Metrics, inventory: InventoryService) -> list[Route]:
    @public
    async def scrape(_: Request) -> Response:
        counted = await run_in_threadpool(inventory.count)
        return Response(metrics.render(inventory_gauges(counted)), media_type=CONTENT_TYPE)

    return [Route("/metrics", scrape, methods=["GET"])]


class CountingMiddleware:
    """Counts every answer of one port by status class; on the registry port also the blob
    bytes sent (the Content-Length of blob answers)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, port: str) -> None:
        self.app, self.metrics, self.port = app, metrics, port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_blob = self.port == "registry" and "/blobs/" in scope["path"]
        is_head = scope["method"] == "HEAD"

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                self.metrics.http_requests.inc(port=self.port, code=f"{status // 100}xx")
                if is_blob and not is_head and status in (200, 206):
                    length = dict(message.get("headers", [])).get(b"content-length")
                    if length is not None:
                        self.metrics.registry_blob_bytes.inc(int(length))
            await send(message)

        await self.app(scope, receive, counting_send)
