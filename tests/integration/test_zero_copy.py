"""The path-send protocol on a real uvicorn server: whole files go out through sendfile with
the right bytes and lengths, ranges and HEAD still work, and a kept-alive connection serves
the next request after a sent file."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from imagedepot.api.zero_copy import PATHSEND, http_protocol
from tests.support.registry import self_signed_certificate


@dataclass
class Served:
    base: str
    directory: Path
    offered: list[bool]
    """Per request: whether the app was offered the path-send extension."""
    verify: ssl.SSLContext | bool


@pytest.fixture(params=["http", "https"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    """A uvicorn server of `tmp_path`'s files, over plain TCP (sendfile) or TLS (asyncio's
    read-and-write fallback)."""
    offered: list[bool] = []
    tls: dict[str, str] = {}
    verify: ssl.SSLContext | bool = True
    if request.param == "https":
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        self_signed_certificate(cert, key)
        tls = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        verify = ssl.create_default_context(cafile=str(cert))

    async def file(request: Request) -> Response:
        offered.append(PATHSEND in request.scope.get("extensions", {}))
        return FileResponse(tmp_path / request.path_params["name"])

    app = Starlette(routes=[Route("/files/{name}", file, methods=["GET", "HEAD"])])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            http=http_protocol(),
            log_level="warning",
            lifespan="off",
            loop="asyncio",
            **tls,  # type: ignore[arg-type]
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield Served(f"{request.param}://127.0.0.1:{port}", tmp_path, offered, verify)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_protocol_is_the_path_send_one() -> None:
    # httptools is a declared dependency: serving never falls back to copying through Python.
    assert http_protocol() != "auto"


def test_whole_files_ranges_and_head(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    base, directory, offered = served.base, served.directory, served.offered
    sent: list[int] = []
    real_sendfile = os.sendfile

    def counting_sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        done = real_sendfile(out_fd, in_fd, offset, count)
        sent.append(done)
        return done

    monkeypatch.setattr(os, "sendfile", counting_sendfile)
    data = os.urandom(3 * 1024 * 1024 + 17)
    (directory / "blob").write_bytes(data)
    (directory / "empty").write_bytes(b"")
    with httpx.Client(base_url=base, verify=served.verify) as client:
        whole = client.get("/files/blob")
        assert whole.status_code == 200
        assert whole.content == data
        assert whole.headers["content-length"] == str(len(data))
        if base.startswith("http:"):
            assert sum(sent) == len(data)  # by the kernel, not read through Python
        # The same connection serves the next request once the file went out.
        again = client.get("/files/blob")
        assert again.content == data
        empty = client.get("/files/empty")
        assert (empty.status_code, empty.content) == (200, b"")
        part = client.get("/files/blob", headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206
        assert part.content == data[1000:2000]
        head = client.head("/files/blob")
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(data))
        assert head.content == b""
    assert offered
    assert all(offered)


def test_a_client_that_leaves_mid_file_is_no_error(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    (served.directory / "large").write_bytes(os.urandom(64 * 1024 * 1024))
    host, port = served.base.rsplit("/", 1)[1].split(":")
    raw = socket.create_connection((host, int(port)))
    if served.base.startswith("https:"):
        assert isinstance(served.verify, ssl.SSLContext)
        raw = served.verify.wrap_socket(raw, server_hostname=host)
    with raw:
        raw.sendall(b"GET /files/large HTTP/1.1\r\nHost: test\r\n\r\n")
        assert raw.recv(65536).startswith(b"HTTP/1.1 200")
        # Reset rather than close: the server is mid-file when the connection goes.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(1)
    with httpx.Client(base_url=served.base, verify=served.verify) as client:
        assert client.get("/files/large").status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
