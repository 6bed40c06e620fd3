"""Console sessions on a real SQLite store: a token traded for a session, which ends when it is
signed out, when it expires, or when its credential is revoked; the cookie's secret is never
stored, and the admin token's session keeps the project it named."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from imagedepot.adapters.db.store import SqlMetadataStore
from imagedepot.adapters.secretbox import FernetSecretBox
from imagedepot.domain.errors import Unauthenticated
from imagedepot.domain.identity import Role
from imagedepot.services.console_sessions import ConsoleSessions
from imagedepot.services.identity import IdentityService
from tests.support.clock import MovableClock

ADMIN = "the-operators-token"
Parts = tuple[SqlMetadataStore, IdentityService, ConsoleSessions, MovableClock]


@pytest.fixture
def parts(
    tmp_path: Path,
) -> Iterator[tuple[SqlMetadataStore, IdentityService, ConsoleSessions, MovableClock]]:
    store = SqlMetadataStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    clock = MovableClock()
    identity = IdentityService(store, clock, ADMIN, FernetSecretBox(Fernet.generate_key()))
    yield store, identity, ConsoleSessions(store, identity, clock, timedelta(hours=1)), clock
    store.close()


def test_a_session_stands_for_its_credential_until_signed_out(parts: Parts) -> None:
    store, identity, sessions, _ = parts
    issued = identity.issue_token("team-a", Role.READER)
    assert issued.token is not None
    signed = sessions.sign_in(issued.token)
    principal, session = sessions.resolve(signed.secret)
    assert (principal.project_id, principal.role) == (issued.project_id, Role.READER)
    assert session.csrf_token
    assert session.csrf_token != signed.secret
    with store.transaction(read_only=True) as uow:
        stored = uow.console_sessions.get(hashlib.sha256(signed.secret.encode()).hexdigest())
    assert stored is not None
    assert stored.id_sha256 != signed.secret
    sessions.sign_out(signed.secret)
    with pytest.raises(Unauthenticated):
        sessions.resolve(signed.secret)


def test_sessions_expire_and_die_with_their_credential(parts: Parts) -> None:
    _, identity, sessions, clock = parts
    first = identity.issue_token("team-a", Role.MEMBER)
    assert first.token is not None
    expiring = sessions.sign_in(first.token)
    clock.current += timedelta(minutes=61)
    with pytest.raises(Unauthenticated, match="expired"):
        sessions.resolve(expiring.secret)
    fresh = sessions.sign_in(first.token)
    identity.revoke(first.credential_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        sessions.resolve(fresh.secret)
    with pytest.raises(Unauthenticated):
        sessions.resolve("a-cookie-nobody-was-given")
    with pytest.raises(Unauthenticated):
        sessions.sign_in("not-a-token")


def test_the_admin_token_signs_in_to_the_project_it_names(parts: Parts) -> None:
    _, identity, sessions, _ = parts
    project = identity.ensure_project("team-b")
    with pytest.raises(Unauthenticated, match="X-Project-Id"):
        sessions.sign_in(ADMIN)
    signed = sessions.sign_in(ADMIN, "team-b")
    principal, _ = sessions.resolve(signed.secret)
    assert principal.system_admin
    assert principal.project_id == project.id
