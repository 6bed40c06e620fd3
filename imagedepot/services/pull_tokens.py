"""Short-lived pull tokens: the registry port's side of the standard token flow.

Container runtimes and skopeo log in to a registry by asking its token endpoint for a
bearer token (with their login as basic auth, or with none for an anonymous pull) and
then presenting that token. Here the login's password is an imagedepot credential; the
token handed out names only the project and its expiry, signed with HMAC-SHA256 under a
key derived from the data dir's secret key, so it never carries the credential and is
checked without a database read. An imagedepot token is also accepted as the bearer
token itself, for clients configured with one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from imagedepot.domain.errors import Unauthenticated
from imagedepot.ports import Clock
from imagedepot.services.identity import IdentityService
from imagedepot.services.serving import ANONYMOUS, Puller

TOKEN_PREFIX = "idr1."  # noqa: S105 - tells our signed tokens from imagedepot credentials
TOKEN_LIFETIME = timedelta(minutes=5)
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

    def issue(self, credential: str | None) -> PullToken:
        """A token for the project of `credential`, or an anonymous one when there is none
        (an anonymous token pulls only from projects that allow anonymous pulls)."""
        puller = ANONYMOUS if credential is None else self.authenticate(credential)
        now = self._clock.now()
        claims = {
            "p": puller.project_id,
            "iat": int(now.timestamp()),
            "exp": int((now + self._lifetime).timestamp()),
        }
        payload = _encode(json.dumps(claims, separators=(",", ":")).encode())
        token = f"{TOKEN_PREFIX}{payload}.{self._signature(payload)}"
        return PullToken(token, now, int(self._lifetime.total_seconds()))

    def authenticate(self, credential: str) -> Puller:
        """The puller behind a bearer value: one of our pull tokens, else an imagedepot token."""
        if credential.startswith(TOKEN_PREFIX):
            return self._verify(credential.removeprefix(TOKEN_PREFIX))
        principal = self._identity.authenticate_token(credential, None)
        self._identity.authorize(principal, PULL_ACTION)
        return Puller(principal.project_id)

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
