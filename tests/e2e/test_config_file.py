"""`imagedepot serve --config FILE` for real: the file's settings take effect below the
environment and the flags, and a bad file stops `serve` (and `worker`) at once with one line
naming the file and the key."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.service import Service, imagedepot_command


@pytest.fixture(scope="module")
def unused_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory, unused_port: int) -> Iterator[Service]:
    config_file = tmp_path_factory.mktemp("config") / "imagedepot.toml"
    config_file.write_text(
        f"""
# no worker: the caches below stay Creating and reach for no upstream
run_worker = false
quota_caches = 1
max_body_bytes = 4096
# the flag --port that Service passes wins over this
port = {unused_port}
# IMAGEDEPOT_AUTH_FAILURE_BURST=10000, which Service sets, wins over this
auth_failure_burst = 1
"""
    )
    with Service(serve_args=("--config", str(config_file))) as running:
        yield running


def test_the_files_settings_take_effect(configured: Service) -> None:
    token = configured.credential("from-file")
    with configured.client(token) as client:
        bulky = {"name": "bulky", "images": ["busybox"], "padding": "x" * 8192}
        assert client.post("/v5/imagecaches", json=bulky).status_code == 413
        first = client.post("/v5/imagecaches", json={"name": "one", "images": ["busybox"]})
        assert first.status_code == 201, first.text
        second = client.post("/v5/imagecaches", json={"name": "two", "images": ["busybox"]})
        assert second.status_code == 403
        assert "quota exceeded" in second.json()["error_msg"]
        listed = client.get("/v5/imagecaches").json()["image_caches"]
        assert [(c["name"], c["status"]) for c in listed] == [("one", "Creating")]


def test_the_environment_and_flags_beat_the_file(configured: Service, unused_port: int) -> None:
    with configured.client("not-a-token") as client:
        statuses = [client.get("/v5/imagecaches").status_code for _ in range(4)]
    assert statuses == [401] * 4  # a burst of 1 would have answered 429 from the second on
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{unused_port}/healthz", timeout=2)


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_bad_file_stops_the_server_with_one_line_naming_the_key(
    tmp_path: Path, command: str
) -> None:
    config_file = tmp_path / "imagedepot.toml"
    config_file.write_text("quota_caches = 5\nparallel_blobs = 0\n")
    result = subprocess.run(
        imagedepot_command(command, "--config", str(config_file), "--data-dir", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"Error: {config_file}: key 'parallel_blobs' must be at least 1, got 0"
    ]
    assert not (tmp_path / "imagedepot.db").exists()
