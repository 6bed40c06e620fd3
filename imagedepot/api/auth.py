"""Turns a request into a Principal: the one place every dialect asks "who is calling?".

Tokens arrive as `X-Auth-Token: T` or `Authorization: Bearer T`; the admin token
may name a project with `X-Project-Id`. Later credential kinds (AK/SK
signatures) are added here and nowhere else.
"""

from __future__ import annotations

from starlette.requests import Request

from imagedepot.domain.errors import Forbidden
from imagedepot.domain.identity import Principal, Role
from imagedepot.services.identity import IdentityService


def presented_token(request: Request) -> str | None:
    token = request.headers.get("x-auth-token")
    if token:
        return token.strip()
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def authenticate(request: Request, identity: IdentityService) -> Principal:
    return identity.authenticate_token(
        presented_token(request), request.headers.get("x-project-id") or None
    )


def require_writer(principal: Principal) -> None:
    """Readers may look but not change anything."""
    if principal.role is Role.READER:
        raise Forbidden("this credential has the reader role and may not change objects")
