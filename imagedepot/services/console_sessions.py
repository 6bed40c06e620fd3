"""Sessions of the web console: a token traded once for a cookie, so the token never sits in
a URL or in the browser's storage.

A session stores only the sha256 of the cookie's secret, the credential it stands for, the
project it acts in and its CSRF token. Every request re-checks the credential (a revoked
credential ends its sessions at once); signing out revokes the session; sessions expire.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from imagedepot.domain.errors import Unauthenticated
from imagedepot.domain.identity import Principal
from imagedepot.ports import Clock, ConsoleSession, MetadataStore
from imagedepot.services.identity import IdentityService

SESSION_LIFETIME = timedelta(hours=8)


@dataclass(frozen=True)
class SignedIn:
    """What the browser gets once: the cookie's secret, and the session it opens."""

    secret: str
    session: ConsoleSession
    principal: Principal


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ConsoleSessions:
    def __init__(
        self,
        store: MetadataStore,
        identity: IdentityService,
        clock: Clock,
        lifetime: timedelta = SESSION_LIFETIME,
    ) -> None:
        self._store = store
        self._identity = identity
        self._clock = clock
        self._lifetime = lifetime

    def sign_in(self, token: str, project: str | None = None) -> SignedIn:
        """A new session for the credential `token` is (the admin token names `project`)."""
        principal = self._identity.authenticate_token(token.strip() or None, project or None)
        now = self._clock.now()
        secret = secrets.token_urlsafe(32)
        session = ConsoleSession(
            id_sha256=_digest(secret),
            credential_id=principal.credential_id,
            project_id=principal.project_id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + self._lifetime,
        )
        with self._store.transaction() as uow:
            uow.console_sessions.forget_expired(now - self._lifetime)
            uow.console_sessions.add(session)
        return SignedIn(secret, session, principal)

    def resolve(self, secret: str | None) -> tuple[Principal, ConsoleSession]:
        """The principal and session behind a cookie; Unauthenticated when there is none, it
        was signed out or has expired, or its credential no longer works."""
        if not secret:
            raise Unauthenticated("not signed in")
        with self._store.transaction(read_only=True) as uow:
            session = uow.console_sessions.get(_digest(secret))
        if session is None or session.revoked_at is not None:
            raise Unauthenticated("not signed in")
        if session.expires_at <= self._clock.now():
            raise Unauthenticated("the session has expired: sign in again")
        return self._identity.principal_of(session.credential_id, session.project_id), session

    def sign_out(self, secret: str | None) -> None:
        if not secret:
            return
        with self._store.transaction() as uow:
            uow.console_sessions.revoke(_digest(secret), self._clock.now())
