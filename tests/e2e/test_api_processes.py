"""`serve --processes N`: API processes sharing both ports and a worker process under one
supervisor, tested as a user runs it: a real docker-registry upstream, requests over fresh
connections, signals to the supervisor and to its children."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_connections_and_shutdown import LIMITS, started_slow_upload
from tests.support.images import make_layer, push_image
from tests.support.registry import RegistryServer
from tests.support.service import Service, wait_for_status

SLOW_POLL = "worker_poll_seconds = 120\n"
"""Long enough that a build starting within seconds can only have been woken by the API."""


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return sorted(int(line) for line in found.stdout.split())


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def counted(metrics: str, series: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    config = tmp_path_factory.mktemp("config") / "imagedepot.toml"
    config.write_text(SLOW_POLL)
    with Service(
        env={"IMAGEDEPOT_API_PROCESSES": "2", "IMAGEDEPOT_CONFIG": str(config)}
    ) as service:
        yield service


def test_two_api_processes_share_the_ports_wake_the_worker_and_count_together(
    supervised: Service, registry: RegistryServer
) -> None:
    assert len(children(supervised.pid)) == 3, "two API processes and a worker"
    push_image(registry.url, "procs/app", "v1", [make_layer(seed=41)])
    token = supervised.credential("procs", "admin")
    for _ in range(60):  # a fresh connection each: the kernel spreads them over the processes
        assert httpx.get(f"{supervised.url}/healthz").status_code == 200
    with supervised.client(token) as client:
        started = time.monotonic()
        response = client.post(
            "/v5/imagecaches",
            json={"name": "procs", "images": [f"{registry.endpoint}/procs/app:v1"]},
        )
        assert response.status_code == 201, response.text
        cache = response.json()["image_cache"]
        wait_for_status(client, cache["id"], {"Available"}, timeout=30)
        # The worker polls every 120 s here: only the API's wake-up can have started it.
        assert time.monotonic() - started < 20

    answered_by: dict[str, float] = {}
    counts = supervised.data_dir / "run" / "counts"

    def both_answered() -> bool:
        for path in counts.glob("*.json"):
            snapshot = json.loads(path.read_text())
            answered_by[path.stem] = sum(value for _, value in snapshot["http_requests"])
        return sum(1 for value in answered_by.values() if value > 0) >= 2

    wait_until(both_answered, 5, f"requests answered by both API processes: {answered_by}")
    # Whichever process a scrape reaches, it shows every process's counts: the worker's
    # build and all the requests so far (the others' as of their last snapshot, each second).
    build = 'imagedepot_cache_builds_total{outcome="available"}'
    wait_until(
        lambda: counted(httpx.get(f"{supervised.url}/metrics").text, build) == 1,
        5,
        "the worker's build counted on the API's /metrics",
    )
    for _ in range(6):
        page = httpx.get(f"{supervised.url}/metrics").text
        assert counted(page, build) == 1
        assert counted(page, 'imagedepot_http_requests_total{code="2xx",port="api"}') >= 60


def test_a_child_that_dies_is_replaced_while_the_others_answer(supervised: Service) -> None:
    before = children(supervised.pid)
    victim = before[0]
    subprocess.run(["kill", "-9", str(victim)], check=True)
    for _ in range(20):
        assert httpx.get(f"{supervised.url}/healthz").status_code == 200
    wait_until(
        lambda: len(children(supervised.pid)) == 3 and victim not in children(supervised.pid),
        10,
        "a replacement process",
    )
    assert "ended (exit code -9); starting another" in supervised.log


def test_sigterm_stops_every_process_and_kill_9_of_the_supervisor_leaves_none(
    tmp_path: Path,
) -> None:
    service = Service(env={"IMAGEDEPOT_API_PROCESSES": "2"}).start()
    try:
        process = service._process
        assert process is not None
        kids = children(service.pid)
        assert len(kids) == 3
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert all(subprocess.run(["kill", "-0", str(kid)]).returncode != 0 for kid in kids)
        assert "Traceback" not in service.log

        service.start()
        kids = children(service.pid)
        service.kill9()
        wait_until(
            lambda: all(subprocess.run(["kill", "-0", str(kid)]).returncode != 0 for kid in kids),
            15,
            "children ending with their supervisor",
        )
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{service.url}/healthz")
    finally:
        service.stop()


def test_sigterm_to_every_process_drains_and_a_second_signal_stops_at_once() -> None:
    """As systemd stops a service: SIGTERM to each of its processes, not only the main one.
    The children drain (however many SIGTERMs reach them) instead of taking the supervisor's
    forwarded one as a second signal; a second signal to the supervisor stops them at once."""
    env = {**LIMITS, "IMAGEDEPOT_SHUTDOWN_SECONDS": "60", "IMAGEDEPOT_API_PROCESSES": "2"}
    service = Service(env=env).start()
    uploader, stop, _ = started_slow_upload(service)
    try:
        process = service._process
        assert process is not None
        for pid in [service.pid, *children(service.pid)]:
            subprocess.run(["kill", "-TERM", str(pid)], check=True)
        time.sleep(2)
        assert process.poll() is None, "still draining the slow upload"
        assert "a second signal" not in service.log
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
        assert time.monotonic() - started < 5
        assert "a second signal" in service.log
        assert not children(service.pid)
    finally:
        stop.set()
        uploader.join()
        service.stop()
