"""Zero-copy file responses for the embedded uvicorn servers: the ASGI "path send"
extension (`http.response.pathsend`), answered with `loop.sendfile`.

Blobs and VM image files are the bulk of what imagedepot sends; uvicorn reads them through
Python in chunks, while docker-registry hands them to the kernel. Starlette's FileResponse
already names the file by path when a server offers this extension (whole-file answers
only; ranges keep streaming), so offering it is all it takes: plain TCP sockets then go
through os.sendfile, and TLS transports fall back to asyncio's own read-and-write loop.
This builds on uvicorn's httptools protocol (the attributes it relies on have been stable
for years); `http_protocol()` answers "auto" whenever that protocol is not there.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

PATHSEND = "http.response.pathsend"
_FALLBACK_CHUNK = 1 << 20


def http_protocol() -> Any:
    """The uvicorn `http` setting to serve with: the path-send protocol, or "auto"."""
    try:
        from uvicorn.protocols.http.httptools_impl import (
            HttpToolsProtocol,
            RequestResponseCycle,
        )
    except ImportError:  # httptools missing: uvicorn's pure-Python h11 protocol serves
        return "auto"

    class PathSendCycle(RequestResponseCycle):
        async def send(self, message: Any) -> None:
            if message["type"] != PATHSEND:
                await super().send(message)
                return
            if self.disconnected:
                return
            file = await asyncio.to_thread(open, message["path"], "rb")
            try:
                size = os.fstat(file.fileno()).st_size
                if self.chunked_encoding:
                    await self._send_read(file)
                    return
                if self.flow.write_paused:
                    await self.flow.drain()
                if size:
                    try:
                        await asyncio.get_running_loop().sendfile(self.transport, file, 0, size)
                    except (ConnectionError, RuntimeError) as error:
                        # RuntimeError: asyncio's "Transport is closing", the same thing seen
                        # earlier; anything else is a real fault.
                        gone = isinstance(error, ConnectionError) or self.transport.is_closing()
                        if not gone:
                            raise
                        # The client went away mid-file: nothing more to send, nothing wrong.
                        self.transport.close()
                        self.disconnected = True
                        return
                self.expected_content_length -= size
            finally:
                file.close()
            await super().send({"type": "http.response.body", "body": b"", "more_body": False})

        async def _send_read(self, file: Any) -> None:
            while True:
                chunk = await asyncio.to_thread(file.read, _FALLBACK_CHUNK)
                more = len(chunk) == _FALLBACK_CHUNK
                await super().send({"type": "http.response.body", "body": chunk, "more_body": more})
                if not more:
                    return

    class PathSendProtocol(HttpToolsProtocol):
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope["extensions"] = {PATHSEND: {}}

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            # The cycle's task has not run yet: it looks `send` up on this class.
            self.cycle.__class__ = PathSendCycle

    return PathSendProtocol
