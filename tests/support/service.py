"""A real `imagedepot serve` in a subprocess on free loopback ports, for end-to-end tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.support.ports import free_port, wait_for_http

ADMIN_TOKEN = "test-admin-token"


def imagedepot_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "imagedepot.cli", *args]


class _Supervised:
    """A process of ours the test started, its output in a log file: stopped with SIGTERM
    (SIGKILL after 20 s) when the block ends, or killed outright with `kill9`."""

    _process: subprocess.Popen[bytes] | None
    _log: Path

    @property
    def log(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill9(self) -> None:
        assert self._process is not None
        self._process.kill()
        self._process.wait()
        self._process = None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Service(_Supervised):
    """`with Service() as service: service.client(token).get(...)`; restartable, killable."""

    def __init__(
        self,
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        serve_args: tuple[str, ...] = (),
    ) -> None:
        """`serve_args` go on the `serve` command line after the ports and data dir."""
        self._own_dir = data_dir is None
        self.serve_args = serve_args
        self.data_dir = data_dir or Path(tempfile.mkdtemp(prefix="imagedepot-data-"))
        self.env = {
            **os.environ,
            "IMAGEDEPOT_ADMIN_TOKEN": ADMIN_TOKEN,
            "IMAGEDEPOT_RETRY_BASE_DELAY": "0.05",
            "IMAGEDEPOT_LEASE_SECONDS": "10",
            # Tests of refused credentials send many from one address; the limit on failed
            # authentications has a test of its own.
            "IMAGEDEPOT_AUTH_FAILURE_BURST": "10000",
            **(env or {}),
        }
        self.port = 0
        self.registry_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log = self.data_dir / "serve.log"

    @property
    def pid(self) -> int:
        """The server process (for benchmarks that read its CPU time)."""
        assert self._process is not None, "not started"
        return self._process.pid

    @property
    def tls(self) -> bool:
        return bool(self.env.get("IMAGEDEPOT_TLS_CERT"))

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Service:
        self.port, self.registry_port = free_port(), free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                imagedepot_command(
                    "serve",
                    "--port",
                    str(self.port),
                    "--registry-port",
                    str(self.registry_port),
                    "--data-dir",
                    str(self.data_dir),
                    *self.serve_args,
                ),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            response = wait_for_http(f"{self.url}/healthz", timeout=30)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"imagedepot did not start:\n{self.log}") from None
        assert response.status_code == 200, self.log
        return self

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        super().__exit__(kind, value, tb)
        if self._own_dir and kind is None:  # kept when the block failed, for its log
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            imagedepot_command(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"imagedepot {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def set_anonymous_pull(
        self, project: str, allowed: bool, *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        flag = "--on" if allowed else "--off"
        return self.cli(
            "projects",
            "set-anonymous-pull",
            "--data-dir",
            str(self.data_dir),
            "--project",
            project,
            flag,
            check=check,
        )

    def allow_pull_through(self, project: str, registry: str, *extra: str) -> None:
        """`upstreams add` on the data dir: `project` may pull `registry` through, over plain
        HTTP (the test registries are loopback ones); `extra` adds options such as --check."""
        self.cli(
            "upstreams",
            "add",
            "--data-dir",
            str(self.data_dir),
            "--project",
            project,
            "--registry",
            registry,
            "--plain-http",
            *extra,
        )

    def add_pull_secret(
        self, project: str, name: str, server: str, username: str, password: str
    ) -> None:
        """`secrets create-docker-registry` on the data dir: the secret `default:NAME`."""
        self.cli(
            "secrets",
            "create-docker-registry",
            "--data-dir",
            str(self.data_dir),
            "--project",
            project,
            "--namespace",
            "default",
            "--name",
            name,
            "--docker-server",
            server,
            "--docker-username",
            username,
            "--docker-password",
            password,
        )

    def credential(self, project: str, role: str = "member") -> str:
        result = self.cli(
            "credentials",
            "create",
            "--data-dir",
            str(self.data_dir),
            "--project",
            project,
            "--role",
            role,
            "--json",
        )
        token: str = json.loads(result.stdout)["token"]
        return token

    def client(self, token: str | None) -> httpx.Client:
        headers = {"X-Auth-Token": token} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, verify=not self.tls)

    def blob_dir(self) -> Path:
        return self.data_dir / "blobs" / "sha256"

    def stored_digests(self) -> set[str]:
        return {"sha256:" + p.name for p in self.blob_dir().glob("*/*") if p.is_file()}


def wait_for_status(
    client: httpx.Client, cache_id: str, wanted: set[str], timeout: float = 60, poll: float = 0.1
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(f"/v5/imagecaches/{cache_id}")
        assert response.status_code == 200, response.text
        body = response.json()["image_cache"]
        if body["status"] in wanted:
            return body
        time.sleep(poll)
    raise AssertionError(f"cache {cache_id} stayed {body.get('status')}: {body}")


def wait_gone(client: httpx.Client, cache_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(f"/v5/imagecaches/{cache_id}").status_code == 404:
            return
        time.sleep(0.1)
    raise AssertionError(f"cache {cache_id} still exists after {timeout}s")


class WorkerProcess(_Supervised):
    """`imagedepot worker` in a subprocess (builds only, no ports), killable with -9."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.env = {**os.environ, "IMAGEDEPOT_LEASE_SECONDS": "10", **env}
        self._process: subprocess.Popen[bytes] | None = None
        self._log = data_dir / "worker.log"

    def start(self) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                imagedepot_command("worker", "--data-dir", str(self.data_dir)),
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def __enter__(self) -> WorkerProcess:
        return self.start()
