"""A real CNCF distribution registry (Debian's `docker-registry`) started per test.

It listens on a free loopback port with filesystem storage in a temp dir, optionally
behind htpasswd (basic) auth or token auth, and is stopped when the block ends.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.ports import free_port

if TYPE_CHECKING:
    from tests.support.tokenserver import TokenServer

REGISTRY_BINARY = "/usr/bin/docker-registry"
HTPASSWD_BINARY = "/usr/bin/htpasswd"


def require_binary(path: str) -> str:
    """`path` if it is executable; otherwise skip the test, or fail it under CI=true."""
    if os.access(path, os.X_OK):
        return path
    message = f"{path} is not installed"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def htpasswd_file(path: Path, users: Mapping[str, str]) -> None:
    """Write an htpasswd file with bcrypt hashes (the only kind distribution accepts)."""
    binary = require_binary(HTPASSWD_BINARY)
    lines = []
    for user, password in users.items():
        result = subprocess.run(
            [binary, "-Bbn", "-C", "4", user, password],
            capture_output=True,
            text=True,
            check=True,
        )
        lines.append(result.stdout.strip())
    path.write_text("\n".join(lines) + "\n")


class RegistryServer:
    """`with RegistryServer(users={"alice": "pw"}) as registry: registry.url ...`"""

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        token: TokenServer | None = None,
        tls: bool = False,
        binary: str = REGISTRY_BINARY,
        start_timeout: float = 15.0,
        proxy_remote: str | None = None,
    ) -> None:
        """`proxy_remote` (a URL) runs it as a pull-through cache of that registry."""
        if users and token:
            raise ValueError("choose htpasswd users or token auth, not both")
        self.users = dict(users or {})
        self.token = token
        self.tls = tls
        self.binary = binary
        self.start_timeout = start_timeout
        self.proxy_remote = proxy_remote
        self.port = 0
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server process (for benchmarks that read its CPU time)."""
        assert self._process is not None, "not started"
        return self._process.pid

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.endpoint}"

    @property
    def ca_path(self) -> Path:
        """The self-signed certificate of a TLS registry, to trust it explicitly."""
        assert self._dir is not None, "registry not started"
        assert self.tls, "not a TLS registry"
        return self._dir / "tls.pem"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this registry's certificate (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    @property
    def storage(self) -> Path:
        assert self._dir is not None, "registry not started"
        return self._dir / "storage"

    @property
    def log(self) -> str:
        if self._dir is None or not (self._dir / "registry.log").exists():
            return ""
        return (self._dir / "registry.log").read_text(errors="replace")

    def __enter__(self) -> RegistryServer:
        binary = require_binary(self.binary)
        self._dir = Path(tempfile.mkdtemp(prefix="imagedepot-registry-"))
        try:
            for _ in range(3):  # the free port may be taken between probing and binding
                if self._start(binary):
                    return self
            raise RuntimeError(f"docker-registry did not start:\n{self.log}")
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _start(self, binary: str) -> bool:
        assert self._dir is not None
        self.port = free_port()
        config = self._dir / "config.yml"
        config.write_text(self._config())
        with (self._dir / "registry.log").open("wb") as log:
            self._process = subprocess.Popen(
                [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False
            try:
                httpx.get(
                    f"{self.url}/v2/",
                    timeout=1.0,
                    verify=self.ssl_context() if self.tls else True,
                )
                return True
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not answer on {self.url}:\n{self.log}")

    def _config(self) -> str:
        assert self._dir is not None
        lines = [
            "version: 0.1",
            "log:",
            "  level: warn",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f'    rootdirectory: "{self._dir / "storage"}"',
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            f"  addr: {self.endpoint}",
            "  secret: imagedepot-tests",
        ]
        if self.tls:
            key_path = self._dir / "tls.key"
            self_signed_certificate(self.ca_path, key_path)
            lines += [
                "  tls:",
                f'    certificate: "{self.ca_path}"',
                f'    key: "{key_path}"',
            ]
        if self.users:
            path = self._dir / "htpasswd"
            htpasswd_file(path, self.users)
            lines += ["auth:", "  htpasswd:", "    realm: imagedepot-tests", f'    path: "{path}"']
        elif self.token is not None:
            lines += [
                "auth:",
                "  token:",
                f'    realm: "{self.token.realm}"',
                f'    service: "{self.token.service}"',
                f'    issuer: "{self.token.issuer}"',
                f'    rootcertbundle: "{self.token.cert_path}"',
            ]
        if self.proxy_remote:
            lines += ["proxy:", f'  remoteurl: "{self.proxy_remote}"']
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def self_signed_certificate(cert_path: Path, key_path: Path) -> None:
    """A certificate for 127.0.0.1 and localhost, its own issuer."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imagedepot test registry")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
