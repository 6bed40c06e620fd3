"""What a connection may cost and how `serve` stops, tried on raw sockets as a slow or hostile
client would: headers that never end or never come are cut off, a shutdown waits a bounded
time for open requests, and a second signal stops at once."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.service import Service

LIMITS = {
    "IMAGEDEPOT_HEADER_TIMEOUT_SECONDS": "2",
    "IMAGEDEPOT_MAX_HEADER_BYTES": "8192",
    "IMAGEDEPOT_SHUTDOWN_SECONDS": "3",
}


@pytest.fixture(scope="module")
def bounded() -> Iterator[Service]:
    with Service(env=LIMITS) as running:
        yield running


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


@pytest.mark.parametrize("port_name", ["port", "registry_port"])
def test_headers_past_the_limit_are_refused_and_the_connection_closed(
    bounded: Service, port_name: str
) -> None:
    with connect(getattr(bounded, port_name)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for _ in range(20):  # 20 KiB of headers, never ended
            sock.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b"limited to 8192 bytes" in answer


def test_headers_that_never_come_or_never_end_are_cut_off(bounded: Service) -> None:
    started = time.monotonic()
    with connect(bounded.port) as silent:
        assert read_all(silent).startswith(b"HTTP/1.1 408 ")
    assert 1.5 < time.monotonic() - started < 6
    started = time.monotonic()
    with connect(bounded.port) as dribbling:
        for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"X-Slow: 1\r\n"):
            dribbling.sendall(piece)
            time.sleep(0.8)
        assert read_all(dribbling).startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 6


def test_a_kept_alive_connection_serves_request_after_request(bounded: Service) -> None:
    """The limits are per request: several within one connection, each under the limits."""
    with connect(bounded.port) as sock:
        for _ in range(3):
            sock.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: " + b"b" * 6000 + b"\r\n\r\n"
            )
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            time.sleep(1)  # more than half the header timeout, in all more than all of it


def slow_upload(service: Service, token: str, image_id: str, stop: threading.Event) -> None:
    """A Glance upload that sends one byte a second, as a very slow client would."""
    with connect(service.port) as sock:
        sock.sendall(
            (
                f"PUT /v2/images/{image_id}/file HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n"
            ).encode()
        )
        while not stop.is_set():
            try:
                sock.sendall(b"x")
            except OSError:
                return
            stop.wait(1)


def started_slow_upload(service: Service) -> tuple[threading.Thread, threading.Event, str]:
    token = service.credential("slow", "member")
    with service.client(token) as client:
        created = client.post(
            "/v2/images", json={"name": "slow", "disk_format": "raw", "container_format": "bare"}
        )
        assert created.status_code == 201, created.text
        image_id = created.json()["id"]
        stop = threading.Event()
        uploader = threading.Thread(target=slow_upload, args=(service, token, image_id, stop))
        uploader.start()
        deadline = time.monotonic() + 10
        while client.get(f"/v2/images/{image_id}").json()["status"] != "saving":
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.1)
    return uploader, stop, image_id


def stopped_within(process: subprocess.Popen[bytes], seconds: float) -> float:
    started = time.monotonic()
    process.wait(timeout=seconds)
    return time.monotonic() - started


def test_a_shutdown_waits_a_bounded_time_for_a_slow_upload() -> None:
    service = Service(env=LIMITS).start()
    uploader, stop, image_id = started_slow_upload(service)
    try:
        process = service._process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        took = stopped_within(process, 20)
        assert took < 3 + 3, f"stopped after {took:.1f} s with a 3 s bound"
        assert "Traceback" not in service.log
        # The upload cut short is queued again (ready for another try), not left saving.
        service.start()
        token = service.credential("slow", "member")
        with service.client(token) as client:
            assert client.get(f"/v2/images/{image_id}").json()["status"] == "queued"
    finally:
        stop.set()
        uploader.join()
        service.stop()


def test_a_second_signal_stops_at_once() -> None:
    service = Service(env={**LIMITS, "IMAGEDEPOT_SHUTDOWN_SECONDS": "60"}).start()
    uploader, stop, _ = started_slow_upload(service)
    try:
        process = service._process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert process.poll() is None, "still draining the slow upload"
        process.send_signal(signal.SIGINT)
        took = stopped_within(process, 20)
        assert took < 3, f"stopped {took:.1f} s after the second signal"
        assert "a second signal" in service.log
    finally:
        stop.set()
        uploader.join()
        service.stop()
