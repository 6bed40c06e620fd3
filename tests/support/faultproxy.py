"""A fault-injecting HTTP proxy in front of a real registry, for tests of retries and resumes.

It forwards every request (streaming, status and headers preserved, `Location` rewritten
to point back at the proxy) and, for requests whose path contains a chosen substring,
injects one of a few faults: an error status, a connection reset mid-body, a body cut
short under its original Content-Length, or flipped bytes. It records what it saw.

It runs aiohttp.web on its own event loop in a background thread, so synchronous test
code and `asyncio.run` in the test can both talk to it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    """Path and query, as the client asked for it."""
    range: str | None
    status: int
    """What the proxy answered (after faults); 0 when the connection was cut."""
    fault: str | None


@dataclass
class _Fault:
    match: str
    kind: str  # status | reset | truncate | corrupt | ignore_range | throttle
    times: int | None
    code: int = 0
    nbytes: int = 0
    retry_after: str | None = None
    method: str | None = None


class FaultProxy:
    """`with FaultProxy(registry.url) as proxy: proxy.status("/blobs/", 500, times=2)`"""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = 0
        self._faults: list[_Fault] = []
        self._seen: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._error: BaseException | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    # --- faults -----------------------------------------------------------------------------

    def status(
        self,
        match: str,
        code: int,
        *,
        times: int | None = 1,
        retry_after: str | None = None,
        method: str | None = None,
    ) -> None:
        """Answer `code` (with a registry-style error body) instead of forwarding."""
        self._add(_Fault(match, "status", times, code=code, retry_after=retry_after, method=method))

    def reset_after(self, match: str, nbytes: int, *, times: int | None = 1) -> None:
        """Send the headers and `nbytes` of the body, then reset the connection."""
        self._add(_Fault(match, "reset", times, nbytes=nbytes, method="GET"))

    def truncate(self, match: str, nbytes: int, *, times: int | None = 1) -> None:
        """Send `nbytes` of the body under the original Content-Length, then close cleanly."""
        self._add(_Fault(match, "truncate", times, nbytes=nbytes, method="GET"))

    def corrupt(self, match: str, *, times: int | None = 1) -> None:
        """Flip bits in the body (same length): the digest will not match."""
        self._add(_Fault(match, "corrupt", times, method="GET"))

    def ignore_range(self, match: str, *, times: int | None = 1) -> None:
        """Forward without the Range header, like a server that cannot resume (answers 200)."""
        self._add(_Fault(match, "ignore_range", times, method="GET"))

    def throttle(self, match: str, bytes_per_second: int, *, times: int | None = None) -> None:
        """Forward the body no faster than `bytes_per_second`, for a download that takes a while."""
        self._add(_Fault(match, "throttle", times, nbytes=bytes_per_second, method="GET"))

    def clear(self) -> None:
        """Forget every fault and every recorded request."""
        with self._lock:
            self._faults.clear()
            self._seen.clear()

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take(self, method: str, path: str, kinds: tuple[str, ...]) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind not in kinds or fault.match not in path:
                    continue
                if fault.method is not None and fault.method != method:
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    # --- records ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[SeenRequest]:
        with self._lock:
            return list(self._seen)

    def seen(self, match: str = "", method: str | None = None) -> list[SeenRequest]:
        """Recorded requests whose path contains `match` (and of `method`, if given)."""
        return [
            r
            for r in self.requests
            if match in r.path and (method is None or r.method == method.upper())
        ]

    def _record(self, request: web.Request, status: int, fault: _Fault | None) -> None:
        seen = SeenRequest(
            method=request.method,
            path=request.path_qs,
            range=request.headers.get("Range"),
            status=status,
            fault=fault.kind if fault else None,
        )
        with self._lock:
            self._seen.append(seen)

    # --- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, args=(sock, ready), name="faultproxy", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        if self._error is not None:
            self.stop()
            raise RuntimeError(f"fault proxy did not start: {self._error}")

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        self._loop = self._thread = None

    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._setup(sock))
        except BaseException as error:
            self._error = error
            sock.close()
            loop.run_until_complete(self._teardown())
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._teardown())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _setup(self, sock: socket.socket) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=60)
        )
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _teardown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # --- forwarding -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._take(request.method, request.path_qs, ("status",))
        if fault is not None:
            self._record(request, fault.code, fault)
            answered = {"Content-Type": "application/json"}
            if fault.retry_after is not None:
                answered["Retry-After"] = fault.retry_after
            return web.Response(
                status=fault.code,
                headers=answered,
                text='{"errors":[{"code":"UNKNOWN","message":"injected fault"}]}',
            )
        assert self._session is not None
        # A multidict: a header sent several times (Go clients send Accept once per type)
        # goes on as sent.
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP
        )
        if "Range" in request.headers and self._take(
            request.method, request.path_qs, ("ignore_range",)
        ):
            headers.popall("Range", None)
        body = request.content.iter_any() if request.body_exists else None
        if request.content_length is not None:
            headers["Content-Length"] = str(request.content_length)
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        ) as upstream:
            fault = None
            if upstream.status in (200, 206) and request.method == "GET":
                fault = self._take(
                    request.method, request.path_qs, ("reset", "truncate", "corrupt", "throttle")
                )
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() in _HOP_BY_HOP:
                    continue
                if key.lower() == "location" and value.startswith(self.upstream):
                    value = self.url + value[len(self.upstream) :]
                response.headers.add(key, value)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            if request.method == "HEAD":
                await response.write_eof()
                self._record(request, upstream.status, None)
                return response
            sent = 0
            flip = fault is not None and fault.kind == "corrupt"
            async for chunk in _chunks(upstream):
                cutting = fault is not None and fault.kind in ("reset", "truncate")
                if fault is not None and cutting and sent + len(chunk) >= fault.nbytes:
                    await response.write(chunk[: fault.nbytes - sent])
                    self._record(request, 0, fault)
                    return await _cut(request, response, reset=fault.kind == "reset")
                if flip and chunk:
                    chunk, flip = bytes([chunk[0] ^ 0xFF]) + chunk[1:], False
                await response.write(chunk)
                sent += len(chunk)
                if fault is not None and fault.kind == "throttle":
                    await asyncio.sleep(len(chunk) / fault.nbytes)
            await response.write_eof()
            self._record(request, upstream.status, fault)
            return response


async def _chunks(upstream: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk in upstream.content.iter_chunked(16 * 1024):
        yield chunk


async def _cut(
    request: web.Request, response: web.StreamResponse, *, reset: bool
) -> web.StreamResponse:
    """End the connection mid-body: an RST for a reset, a FIN for a truncation."""
    transport = request.transport
    if transport is not None:
        # Let the bytes already written reach the client before cutting.
        for _ in range(100):
            if transport.is_closing() or not transport.get_write_buffer_size():
                break
            await asyncio.sleep(0.01)
        if reset:
            await asyncio.sleep(0.05)
            sock = transport.get_extra_info("socket")
            if sock is not None:  # SO_LINGER 0 turns close() into a RST
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()
    return response
