"""Projects, roles and principals: who is calling and on behalf of which project.

Tokens are stored only as their SHA-256; the clear token is shown once, at creation.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from imagedepot.domain.errors import InvalidInput

PROJECT_NAME_RE = re.compile(r"^[a-zA-Z0-9][-_.a-zA-Z0-9]{0,63}\Z")
TOKEN_PREFIX = "idp_"  # noqa: S105 - a prefix, not a secret


class Role(enum.StrEnum):
    ADMIN = "admin"
    MEMBER = "member"
    READER = "reader"


class CredentialKind(enum.StrEnum):
    TOKEN = "token"  # noqa: S105 - a kind name, not a secret
    AKSK = "aksk"


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class Credential:
    """A token (kept only as its SHA-256) or an access key pair (the secret key kept encrypted,
    since verifying a signature needs it)."""

    id: str
    project_id: str
    role: Role
    token_sha256: str | None
    created_at: datetime
    expires_at: datetime | None = None
    kind: CredentialKind = CredentialKind.TOKEN
    access_key: str | None = None
    secret_ciphertext: bytes | None = None
    revoked_at: datetime | None = None

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class Principal:
    """The caller of one request. `system_admin` is the operator's admin token: any project."""

    project_id: str
    role: Role
    credential_id: str
    system_admin: bool = False


def validate_project_name(name: str) -> None:
    if not PROJECT_NAME_RE.match(name):
        raise InvalidInput(
            "project must be 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit",
            field="project",
        )


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_access_key_pair() -> tuple[str, str]:
    """An access key id (20 upper-case letters and digits, as the clouds' AKs look) and a
    40-character secret key."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    access_key = "".join(secrets.choice(alphabet) for _ in range(20))
    secret_key = "".join(secrets.choice(alphabet + "abcdefghijklmnopqrstuvwxyz") for _ in range(40))
    return access_key, secret_key


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
