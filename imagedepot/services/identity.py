"""Projects and credentials: creating them, and turning a presented token into a Principal.

This is the one place that decides who a caller is; the API's auth module only
extracts what the request presents and hands it here, so AK/SK signatures and
per-action permissions can be added in one place later.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass

from imagedepot.domain.errors import Unauthenticated
from imagedepot.domain.identity import (
    Credential,
    Principal,
    Project,
    Role,
    hash_token,
    new_token,
    validate_project_name,
)
from imagedepot.ports import Clock, MetadataStore

DEFAULT_PROJECT = "default"
ADMIN_CREDENTIAL_ID = "admin"


@dataclass(frozen=True)
class IssuedToken:
    project_id: str
    project_name: str
    credential_id: str
    role: Role
    token: str


class IdentityService:
    def __init__(self, store: MetadataStore, clock: Clock, admin_token: str) -> None:
        self._store = store
        self._clock = clock
        self._admin_token_hash = hash_token(admin_token)

    def ensure_project(self, name: str) -> Project:
        validate_project_name(name)
        with self._store.transaction() as uow:
            project = uow.identity.project_by_name(name)
            if project is None:
                project = Project(id=uuid.uuid4().hex, name=name, created_at=self._clock.now())
                uow.identity.add_project(project)
            return project

    def issue_token(self, project_name: str, role: Role) -> IssuedToken:
        project = self.ensure_project(project_name)
        token = new_token()
        credential = Credential(
            id=uuid.uuid4().hex,
            project_id=project.id,
            role=role,
            token_sha256=hash_token(token),
            created_at=self._clock.now(),
        )
        with self._store.transaction() as uow:
            uow.identity.add_credential(credential)
        return IssuedToken(project.id, project.name, credential.id, role, token)

    def authenticate_token(self, token: str | None, project_hint: str | None = None) -> Principal:
        """The principal behind `token`. The admin token acts in the project named by
        `project_hint` (an id or a name), else in the default project."""
        if not token:
            raise Unauthenticated("no credential: send X-Auth-Token or Authorization: Bearer")
        token_hash = hash_token(token)
        if hmac.compare_digest(token_hash, self._admin_token_hash):
            project = self._admin_project(project_hint)
            return Principal(project.id, Role.ADMIN, ADMIN_CREDENTIAL_ID, system_admin=True)
        with self._store.transaction(read_only=True) as uow:
            credential = uow.identity.credential_by_token_hash(token_hash)
        if credential is None:
            raise Unauthenticated("the token is not valid")
        expires_at = credential.expires_at
        if expires_at is not None and expires_at <= self._clock.now():
            raise Unauthenticated("the token has expired")
        return Principal(credential.project_id, credential.role, credential.id)

    def _admin_project(self, hint: str | None) -> Project:
        if hint:
            with self._store.transaction(read_only=True) as uow:
                project = uow.identity.project_by_id(hint) or uow.identity.project_by_name(hint)
            if project is not None:
                return project
            raise Unauthenticated(f"project {hint!r} does not exist")
        return self.ensure_project(DEFAULT_PROJECT)
