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

PROJECT_NAME_RE = re.compile(r"^[a-zA-Z0-9][-_.a-zA-Z0-9]{0,63}$")
TOKEN_PREFIX = "idp_"  # noqa: S105 - a prefix, not a secret


class Role(enum.StrEnum):
    ADMIN = "admin"
    MEMBER = "member"
    READER = "reader"


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class Credential:
    id: str
    project_id: str
    role: Role
    token_sha256: str
    created_at: datetime
    expires_at: datetime | None = None


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


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
