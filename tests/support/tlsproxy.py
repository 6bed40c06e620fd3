"""A TLS front for a plain-HTTP loopback server, because kubectl never sends a bearer token
over plain HTTP (kubernetes/kubectl#744): the kubectl tests talk HTTPS to this proxy, which
forwards the bytes unchanged to `imagedepot serve`."""

from __future__ import annotations

import contextlib
import socket
import ssl
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from tests.support.registry import self_signed_certificate


class TlsProxy:
    """`with TlsProxy(port) as proxy: proxy.url` — https://127.0.0.1:P in front of :port."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._dir = Path(tempfile.mkdtemp(prefix="imagedepot-tlsproxy-"))
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> TlsProxy:
        cert, key = self._dir / "tls.pem", self._dir / "tls.key"
        self_signed_certificate(cert, key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener, context), daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def _accept(self, listener: socket.socket, context: ssl.SSLContext) -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(raw, context), daemon=True)
            thread.start()

    def _serve(self, raw: socket.socket, context: ssl.SSLContext) -> None:
        try:
            client = context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets += [client, upstream]
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join(timeout=5)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.close()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    while True:
        try:
            data = source.recv(65536)
        except OSError:
            data = b""
        if not data:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
            return
        try:
            sink.sendall(data)
        except OSError:
            return
