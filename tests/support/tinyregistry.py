"""A tiny registry of the test's own, on a free loopback port, serving exactly what the test
gives it: manifests by tag and digest, and blobs (or only a blob's size, for HEAD). It plays
a registry a project runs itself, one that names another project's blob digest in a manifest
without holding that blob, and records every request so a test can tell what was asked.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass
class TinyRegistry:
    """`with TinyRegistry() as tiny: tiny.manifest("evil/app", "v1", body, type) ...`"""

    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "not started"
        return f"127.0.0.1:{self._server.server_address[1]}"

    def manifest(self, repository: str, tag: str, body: bytes, media_type: str) -> None:
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.manifests[(repository, tag)] = (body, media_type)
        self.manifests[(repository, digest)] = (body, media_type)

    def seen(self, method: str, fragment: str) -> int:
        with self._lock:
            return sum(1 for m, path in self.requests if m == method and fragment in path)

    def __enter__(self) -> TinyRegistry:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._answer(send_body=True)

            def do_HEAD(self) -> None:
                self._answer(send_body=False)

            def _answer(self, *, send_body: bool) -> None:
                with registry._lock:
                    registry.requests.append((self.command, self.path))
                found = registry._lookup(self.path)
                if found is None:
                    body = b'{"errors":[{"code":"NOT_FOUND","message":"not here"}]}'
                    self.send_response(404 if self.path != "/v2/" else 200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if send_body:
                        self.wfile.write(body)
                    return
                data, media_type = found
                self.send_response(200)
                self.send_header("Content-Type", media_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header(
                    "Docker-Content-Digest", "sha256:" + hashlib.sha256(data).hexdigest()
                )
                self.end_headers()
                if send_body:
                    self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    def _lookup(self, path: str) -> tuple[bytes, str] | None:
        path = path.split("?", 1)[0]
        if not path.startswith("/v2/"):
            return None
        rest = path.removeprefix("/v2/")
        for kind in ("/manifests/", "/blobs/"):
            if kind in rest:
                repository, _, reference = rest.rpartition(kind)
                if kind == "/manifests/":
                    return self.manifests.get((repository, reference))
                data = self.blobs.get(reference)
                return None if data is None else (data, "application/octet-stream")
        return None
