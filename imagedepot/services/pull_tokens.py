"""Short-lived pull tokens: the registry port's side of the standard token flow.

Container runtimes and skopeo log in to a registry by asking its token endpoint for a
bearer token (with their login as basic auth, or with none for an anonymous pull) and
then presenting that token. Here the login's password is an imagedepot credential; the
token handed out names the project, the credential's id and its expiry, signed with
HMAC-SHA256 under a key derived from the data dir's secret key, so it never carries the
credential itself. Whether that credential still works is looked up at most once every
REVOCATION_CHECK per process, so a revocation stops its pull tokens within seconds. An
imagedepot token is also accepted as the bearer token itself, for clients configured with
one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from imagedepot.domain.errors import Unauthenticated
from imagedepot.domain.identity import Principal
from imagedepot.ports import Clock
from imagedepot.services.identity import IdentityService
from imagedepot.services.serving import Puller

TOKEN_PREFIX = "idr1."  # noqa: S105 - tells our signed tokens from imagedepot credentials
TOKEN_LIFETIME = timedelta(minutes=5)
REVOCATION_CHECK = 2.0
"""Seconds a credential's "still usable" answer is reused for its pull tokens."""
PULL_ACTION = "registry:pull"
"""The one action the registry port serves; checked when a credential is presented."""


@dataclass(frozen=True)
class PullToken:
    token: str
    issued_at: datetime
    expires_in: int
    """Seconds."""


class PullTokens:
    def __init__(
        self,
        identity: IdentityService,
        clock: Clock,
        key: bytes,
        lifetime: timedelta = TOKEN_LIFETIME,
    ) -> None:
        self._identity = identity
        self._clock = clock
        self._key = key
        self._lifetime = lifetime
        self._usable: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def issue(self, credential: str | None) -> PullToken:
        """A token for the project of `credential`, or an anonymous one when there is none
        (an anonymous token pulls only from projects that allow anonymous pulls)."""
        claims: dict[str, object] = {"p": None}
        if credential is not None:
            principal = self._principal(credential)
            claims = {"p": principal.project_id, "c": principal.credential_id}
        now = self._clock.now()
        claims.update(iat=int(now.timestamp()), exp=int((now + self._lifetime).timestamp()))
        payload = _encode(json.dumps(claims, separators=(",", ":")).encode())
        token = f"{TOKEN_PREFIX}{payload}.{self._signature(payload)}"
        return PullToken(token, now, int(self._lifetime.total_seconds()))

    def authenticate(self, credential: str) -> Puller:
        """The puller behind a bearer value: one of our pull tokens, else an imagedepot token."""
        if credential.startswith(TOKEN_PREFIX):
            return self._verify(credential.removeprefix(TOKEN_PREFIX))
        return Puller(self._principal(credential).project_id)

    def _principal(self, credential: str) -> Principal:
        principal = self._identity.authenticate_token(credential, None)
        self._identity.authorize(principal, PULL_ACTION)
        return principal

    def _still_usable(self, credential_id: str) -> bool:
        now = time.monotonic()
        with self._lock:
            checked = self._usable.get(credential_id)
        if checked is not None and now - checked[0] < REVOCATION_CHECK:
            return checked[1]
        usable = self._identity.credential_usable(credential_id)
        with self._lock:
            if len(self._usable) > 10_000:
                self._usable.clear()
            self._usable[credential_id] = (now, usable)
        return usable

    def _verify(self, token: str) -> Puller:
        payload, _, signature = token.partition(".")
        if not hmac.compare_digest(signature, self._signature(payload)):
            raise Unauthenticated("the pull token is not valid")
        try:
            claims = json.loads(_decode(payload))
            expires = datetime.fromtimestamp(int(claims["exp"]), UTC)
            project_id = claims["p"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise Unauthenticated("the pull token is not valid") from None
        if expires <= self._clock.now():
            raise Unauthenticated("the pull token has expired")
        credential_id = claims.get("c")
        if isinstance(credential_id, str) and not self._still_usable(credential_id):
            raise Unauthenticated("the credential behind this pull token is revoked or expired")
        return Puller(project_id if isinstance(project_id, str) else None)

    def _signature(self, payload: str) -> str:
        mac = hmac.new(self._key, (TOKEN_PREFIX + payload).encode(), hashlib.sha256)
        return _encode(mac.digest())


def derive_key(secret: bytes) -> bytes:
    """The signing key for pull tokens, derived from (never equal to) the data dir's secret."""
    return hmac.new(secret, b"imagedepot registry pull tokens v1", hashlib.sha256).digest()


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
