"""A throwaway containerd daemon for tests: its own root, state and socket under a temp dir,
the CRI plugin off, started on demand and stopped (with everything it stored) afterwards.
`ctr` talks to it; the tests pull through imagedepot's registry port as a node would."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.support.commands import run_command
from tests.support.registry import require_binary

CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"


class Containerd:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="imagedepot-containerd-"))
        self.socket = self.directory / "containerd.sock"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Containerd:
        binary = require_binary(CONTAINERD)
        require_binary(CTR)
        config = self.directory / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.directory / "root"}"\n'
            f'state = "{self.directory / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f'  address = "{self.socket}"\n'
        )
        with (self.directory / "containerd.log").open("wb") as log:
            self._process = subprocess.Popen(
                [binary, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"containerd exited:\n{self.log}")
            if self.ctr("version", check=False).returncode == 0:
                return self
            time.sleep(0.1)
        self.__exit__(None, None, None)
        raise RuntimeError(f"containerd did not start:\n{self.log}")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def log(self) -> str:
        path = self.directory / "containerd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_command([CTR, "--address", str(self.socket), *args], check=check)
