"""Pull tokens of the registry port's token flow: signed, short-lived, never the credential."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imagedepot.domain.errors import Forbidden, Unauthenticated
from imagedepot.domain.identity import Principal, Role
from imagedepot.domain.policy import Policy
from imagedepot.services.pull_tokens import (
    REVOCATION_CHECK,
    TOKEN_PREFIX,
    PullTokens,
    derive_key,
)
from imagedepot.services.serving import ANONYMOUS, Puller

CREDENTIAL = "idp_secret-credential"


class Clock:
    def __init__(self) -> None:
        self.time = datetime(2025, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self.time


class Identity:
    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy.default()
        self.revoked: set[str] = set()
        self.lookups = 0

    def credential_usable(self, credential_id: str) -> bool:
        self.lookups += 1
        return credential_id not in self.revoked

    def authenticate_token(self, token: str | None, project_hint: str | None = None) -> Principal:
        if token != CREDENTIAL:
            raise Unauthenticated("the token is not valid")
        return Principal("project-1", Role.READER, "credential-1")

    def authorize(self, principal: Principal, action: str) -> None:
        if not self.policy.allows(principal.role, action):
            raise Forbidden(f"role {principal.role} may not {action}")


def tokens(clock: Clock, key: bytes = b"k" * 32, identity: Identity | None = None) -> PullTokens:
    return PullTokens(identity or Identity(), clock, derive_key(key))  # type: ignore[arg-type]


def test_a_role_the_policy_denies_pulling_gets_no_token() -> None:
    no_pull = Identity(Policy.from_document({"roles": {"reader": ["cce:imageCache:list"]}}))
    with pytest.raises(Forbidden):
        tokens(Clock(), identity=no_pull).issue(CREDENTIAL)


def test_a_token_names_the_project_and_not_the_credential() -> None:
    clock = Clock()
    issued = tokens(clock).issue(CREDENTIAL)
    assert issued.token.startswith(TOKEN_PREFIX)
    assert CREDENTIAL not in issued.token
    assert issued.expires_in == 300
    assert issued.issued_at == clock.time
    assert tokens(clock).authenticate(issued.token) == Puller("project-1")


def test_a_revoked_credential_stops_its_pull_tokens_within_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr("imagedepot.services.pull_tokens.time.monotonic", lambda: now[0])
    clock, identity = Clock(), Identity()
    issuer = tokens(clock, identity=identity)
    issued = issuer.issue(CREDENTIAL)
    assert issuer.authenticate(issued.token) == Puller("project-1")
    assert issuer.authenticate(issued.token) == Puller("project-1")
    assert identity.lookups == 1  # the answer is reused for a while
    identity.revoked.add("credential-1")
    now[0] += REVOCATION_CHECK / 2
    assert issuer.authenticate(issued.token) == Puller("project-1")
    now[0] += REVOCATION_CHECK
    with pytest.raises(Unauthenticated, match="revoked"):
        issuer.authenticate(issued.token)
    assert identity.lookups == 2
    anonymous = issuer.issue(None)
    assert issuer.authenticate(anonymous.token) == ANONYMOUS


def test_credentials_are_accepted_as_bearer_tokens_too() -> None:
    assert tokens(Clock()).authenticate(CREDENTIAL) == Puller("project-1")
    with pytest.raises(Unauthenticated):
        tokens(Clock()).authenticate("idp_wrong")
    with pytest.raises(Unauthenticated):
        tokens(Clock()).issue("idp_wrong")


def test_anonymous_tokens_name_no_project() -> None:
    issued = tokens(Clock()).issue(None)
    assert tokens(Clock()).authenticate(issued.token) == ANONYMOUS


def test_tokens_expire_and_cannot_be_forged() -> None:
    clock = Clock()
    issued = tokens(clock).issue(CREDENTIAL)
    with pytest.raises(Unauthenticated, match="not valid"):
        tokens(clock, key=b"another key").authenticate(issued.token)
    payload, _, signature = issued.token.removeprefix(TOKEN_PREFIX).partition(".")
    with pytest.raises(Unauthenticated):
        tokens(clock).authenticate(f"{TOKEN_PREFIX}{payload}x.{signature}")
    with pytest.raises(Unauthenticated):
        tokens(clock).authenticate(f"{TOKEN_PREFIX}garbage")
    clock.time += timedelta(minutes=5)
    with pytest.raises(Unauthenticated, match="expired"):
        tokens(clock).authenticate(issued.token)


def test_the_signing_key_is_derived_not_the_secret() -> None:
    secret = b"fernet-key"
    assert derive_key(secret) != secret
    assert derive_key(secret) == derive_key(secret)
    assert derive_key(secret) != derive_key(b"other")
