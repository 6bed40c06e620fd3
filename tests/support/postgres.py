"""A throwaway PostgreSQL 15 cluster, so the metadata store is tested on the real server.

`initdb` and `pg_ctl` run as the `postgres` user when the tests run as root (the server
refuses to run as root), with the data directory and the unix socket in a temp dir, a free
loopback port, trust authentication and fsync off: durability is irrelevant here, speed is.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.ports import free_port

SUPERUSER = "postgres"
RUN_AS = "postgres"
_START_ATTEMPTS = 3


class PostgresUnavailable(Exception):
    """The PostgreSQL server binaries are not installed."""


@dataclass(frozen=True)
class PostgresCluster:
    host: str
    port: int
    user: str
    data: Path | None = None
    """Its data directory, for `restart`."""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its name."""
        name = f"t_{uuid.uuid4().hex}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name

    def restart(self) -> None:
        """Stop the server at once (every connection cut, as a crash would) and start it
        again on the same port and data."""
        assert self.data is not None, "not a cluster this process started"
        root = self.data.parent
        pg_ctl = str(find_bin_dir() / "pg_ctl")
        restart = [pg_ctl, "restart", "-D", str(self.data), "-m", "immediate", "-w", "-t", "60"]
        _run([*restart, "-l", str(root / "server.log")], root)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def find_bin_dir() -> Path:
    """Where initdb and pg_ctl live: $PG_BIN_DIR, Debian's PostgreSQL 15, any other, or PATH."""
    candidates = [os.environ.get("PG_BIN_DIR", ""), "/usr/lib/postgresql/15/bin"]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    for candidate in candidates:
        if candidate and all(os.access(Path(candidate, b), os.X_OK) for b in ("initdb", "pg_ctl")):
            return Path(candidate)
    raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser"):
        return ["runuser", "-u", RUN_AS, "--", *command]
    return ["su", RUN_AS, "-s", "/bin/sh", "-c", " ".join(_quote(part) for part in command)]


def _quote(part: str) -> str:
    return "'" + part.replace("'", "'\\''") + "'"


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(
        _as_server_user(command), cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )


@contextmanager
def running_cluster() -> Iterator[PostgresCluster]:
    """Start a cluster, yield it, then stop it and delete every file it wrote."""
    bin_dir = find_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="imagedepot-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(root, user=RUN_AS)
        data = root / "data"
        _run(
            [
                str(bin_dir / "initdb"),
                "--pgdata",
                str(data),
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
                "--no-instructions",
            ],
            root,
        )
        port = _start(bin_dir, root, data)
        try:
            yield PostgresCluster(host="127.0.0.1", port=port, user=SUPERUSER, data=data)
        finally:
            _run([str(bin_dir / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w"], root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _start(bin_dir: Path, root: Path, data: Path) -> int:
    # The port is free when chosen but may be taken before the server binds it: try again.
    last_error: RuntimeError | None = None
    for _ in range(_START_ATTEMPTS):
        port = free_port()
        options = " ".join(
            [
                f"-p {port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={root}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        command = [str(bin_dir / "pg_ctl"), "start", "-D", str(data), "-w", "-t", "60"]
        try:
            _run([*command, "-l", str(root / "server.log"), "-o", options], root)
        except RuntimeError as error:
            last_error = error
            continue
        return port
    log = root / "server.log"
    detail = log.read_text(errors="replace") if log.exists() else ""
    raise RuntimeError(f"PostgreSQL did not start: {last_error}\n{detail}")
