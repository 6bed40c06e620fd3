"""`/metrics` for Prometheus, and the middleware that counts each port's answers.

The page is public like `/healthz`: it shows counts over every project and this process's
counters, never a name, an id or a secret.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagedepot.api.auth import public
from imagedepot.metrics import Metrics, gauge_lines
from imagedepot.services.inventory import Inventory, InventoryService

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
