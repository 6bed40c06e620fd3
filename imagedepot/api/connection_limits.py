"""Bounds on what a connection may cost before its request is even read: uvicorn's httptools
protocol takes headers of any size for as long as a client cares to send them, so four
unfinished 64 MiB headers held a quarter of a gigabyte and a connection sending nothing stayed
open for minutes. Here a request's headers must arrive whole within `header_seconds` (408 and
close otherwise) and within `max_header_bytes` (431 and close); idle keep-alive connections
are uvicorn's own `timeout_keep_alive`. A fronting proxy must still bound request bodies'
pace, which only it can see across many connections.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
LINGER_SECONDS = 2.0
"""How long a refused connection's late bytes are read and dropped before it is closed."""


def bounded_protocol(base: Any, max_header_bytes: int, header_seconds: float) -> Any:
    """uvicorn's HTTP protocol class `base` with those bounds; "auto" stays as it is."""
    if not isinstance(base, type):
        return base

    class BoundedProtocol(base):  # type: ignore[misc]
        _header_timer: asyncio.TimerHandle | None = None
        _header_bytes = 0
        _reading_headers = False
        _discarding = False

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._start_headers()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self._reading_headers:
                self._start_headers()

        def on_headers_complete(self) -> None:
            self._reading_headers = False
            self._stop_timer()
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            if self._discarding:
                return
            if self._reading_headers:
                self._header_bytes += len(data)
            super().data_received(data)
            if self._reading_headers and self._header_bytes > max_header_bytes:
                self._refuse(431, f"request headers are limited to {max_header_bytes} bytes")

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._header_bytes = 0  # the next request's headers count afresh

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            super().connection_lost(exc)

        def _start_headers(self) -> None:
            self._reading_headers = True
            self._header_bytes = 0
            self._stop_timer()
            self._header_timer = self.loop.call_later(header_seconds, self._too_slow)

        def _stop_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if self._reading_headers:
                self._refuse(408, f"request headers must arrive within {header_seconds:g} s")

        def _refuse(self, status: int, message: str) -> None:
            if self.transport.is_closing():
                return
            client = self.client or ("?", 0)
            log.debug("closing a connection from %s:%s: %s", client[0], client[1], message)
            body = message.encode()
            self.transport.write(
                b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
                + b"content-type: text/plain; charset=utf-8\r\n"
                + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
                + body
            )
            self._reading_headers = False
            self._stop_timer()
            self._linger()

        def _linger(self) -> None:
            """Close after the answer, reading and dropping what the client is still sending
            for a moment: closing on unread data resets the connection, and the client would
            lose the answer (nginx's lingering close)."""
            self._discarding = True
            if self.transport.can_write_eof():
                self.transport.write_eof()
                self.loop.call_later(LINGER_SECONDS, self.transport.close)
            else:
                self.transport.close()

        def eof_received(self) -> bool | None:
            if self._discarding:
                self.transport.close()
                return None
            result: bool | None = super().eof_received()
            return result

    return BoundedProtocol
