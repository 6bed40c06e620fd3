"""A tiny token service so that the registry's Bearer flow is tested against the real registry.

distribution's `auth: token` verifies JWTs whose `x5c` header chains to its
`rootcertbundle`: here the chain is a single self-signed certificate that is also the
bundle. The service checks basic-auth credentials and grants what the scope asks for
(pull and push on repositories), like a permissive Docker token service.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

GRANTABLE = ("pull", "push")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class TokenRequest:
    account: str | None
    """The basic-auth user, or None for an anonymous request."""
    service: str | None
    scopes: tuple[str, ...]
    granted: bool


class TokenServer:
    """`with TokenServer({"alice": "pw"}) as tokens, RegistryServer(token=tokens) as registry:`"""

    def __init__(
        self,
        users: Mapping[str, str],
        *,
        service: str = "imagedepot-test-registry",
        issuer: str = "imagedepot-test-token-issuer",
        anonymous_pull: bool = False,
        lifetime: int = 300,
    ) -> None:
        self.users = dict(users)
        self.service = service
        self.issuer = issuer
        self.anonymous_pull = anonymous_pull
        self.lifetime = lifetime
        self.port = 0
        self._dir: Path | None = None
        self._key: rsa.RSAPrivateKey | None = None
        self._cert_der = b""
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def cert_path(self) -> Path:
        assert self._dir is not None, "token server not started"
        return self._dir / "root.pem"

    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    def __enter__(self) -> TokenServer:
        self._dir = Path(tempfile.mkdtemp(prefix="imagedepot-tokens-"))
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.issuer)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self._cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="tokenserver", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # --- issuing ----------------------------------------------------------------------------

    def issue(self, subject: str, scopes: list[str], actions: tuple[str, ...] = GRANTABLE) -> str:
        """A signed JWT granting `actions` (as far as asked for) on each repository scope."""
        assert self._key is not None, "token server not started"
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, wanted = rest.rpartition(":")
            if kind != "repository" or not name:
                continue
            granted = [a for a in wanted.split(",") if a in actions or wanted == "*"]
            access.append({"type": "repository", "name": name, "actions": granted})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._cert_der).decode()]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.lifetime,
            "nbf": now - 5,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    def _answer(self, authorization: str | None, query: str) -> tuple[int, dict[str, object]]:
        params = parse_qs(query)
        scopes = [s for value in params.get("scope", []) for s in value.split(" ") if s]
        service = params["service"][0] if params.get("service") else None
        account = self._authenticate(authorization)
        if account is None and authorization is not None:
            self._log(TokenRequest("?", service, tuple(scopes), granted=False))
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
        if account is None and not self.anonymous_pull:
            self._log(TokenRequest(None, service, tuple(scopes), granted=False))
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "credentials required"}]}
        token = self.issue(account or "", scopes, GRANTABLE if account else ("pull",))
        self._log(TokenRequest(account, service, tuple(scopes), granted=True))
        return 200, {
            "token": token,
            "access_token": token,
            "expires_in": self.lifetime,
            "issued_at": datetime.datetime.now(datetime.UTC).isoformat(),
        }

    def _authenticate(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(authorization[6:].strip()).decode()
        except ValueError:
            return None
        user, _, password = decoded.partition(":")
        expected = self.users.get(user)
        if expected is None or not secrets.compare_digest(expected, password):
            return None
        return user

    def _log(self, request: TokenRequest) -> None:
        with self._lock:
            self._requests.append(request)


def _handler_for(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            body: dict[str, object]
            if parts.path != "/token":
                status, body = 404, {"errors": [{"code": "NOT_FOUND", "message": parts.path}]}
            else:
                status, body = server._answer(self.headers.get("Authorization"), parts.query)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="imagedepot-test-tokens"')
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler
