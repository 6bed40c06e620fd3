"""Projects and credentials: issuing, listing and revoking them, and deciding who a caller is
and what they may do.

This is the one place that turns what a request presents (a token, or an
`SDK-HMAC-SHA256` signature) into a Principal and checks each action against the
policy; the API's auth module only extracts what the request carries.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from imagedepot.domain import signing
from imagedepot.domain.errors import Forbidden, InvalidInput, NotFound, Unauthenticated, Unreadable
from imagedepot.domain.identity import (
    Credential,
    CredentialKind,
    Principal,
    Project,
    Role,
    hash_token,
    new_access_key_pair,
    new_token,
    validate_project_name,
)
from imagedepot.domain.policy import Policy
from imagedepot.ports import (
    Clock,
    MetadataStore,
    ProjectSummary,
    SecretBox,
    SecretUndecryptable,
)

ADMIN_CREDENTIAL_ID = "admin"
PROJECT_HEADER = "X-Project-Id"
SIGNATURE_SKEW = timedelta(minutes=15)


@dataclass(frozen=True)
class IssuedCredential:
    """A new credential with its secret parts, shown once."""

    project_id: str
    project_name: str
    credential_id: str
    role: Role
    token: str | None = None
    access_key: str | None = None
    secret_key: str | None = None


@dataclass(frozen=True)
class SignedRequest:
    """A request's signature claim and the canonical request the server rebuilt from it."""

    claim: signing.SignatureClaim
    sdk_date: str
    canonical_request: str


class IdentityService:
    def __init__(
        self,
        store: MetadataStore,
        clock: Clock,
        admin_token: str,
        box: SecretBox,
        policy: Policy | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._admin_token_hash = hash_token(admin_token)
        self._box = box
        self._policy = policy or Policy.default()

    # --- projects and credentials ---------------------------------------------------------

    def ensure_project(self, name: str) -> Project:
        validate_project_name(name)
        with self._store.transaction() as uow:
            project = uow.identity.project_by_name(name)
            if project is None:
                project = Project(id=uuid.uuid4().hex, name=name, created_at=self._clock.now())
                uow.identity.add_project(project)
            return project

    def project_named(self, name: str) -> Project:
        with self._store.transaction(read_only=True) as uow:
            project = uow.identity.project_by_name(name)
        if project is None:
            raise NotFound(f"project {name!r} does not exist")
        return project

    def project_names(self, project_ids: Iterable[str]) -> dict[str, str]:
        """The name of each of `project_ids` that exists (for listings that hold ids)."""
        names: dict[str, str] = {}
        with self._store.transaction(read_only=True) as uow:
            for project_id in set(project_ids):
                project = uow.identity.project_by_id(project_id)
                if project is not None:
                    names[project_id] = project.name
        return names

    def project_summaries(self) -> list[ProjectSummary]:
        """Every project by name with its settings and counts, for the operator's overview."""
        with self._store.transaction(read_only=True) as uow:
            return uow.identity.project_summaries(self._clock.now())

    def set_anonymous_pull(self, project_name: str, allowed: bool) -> None:
        """Let anyone pull the caches of `project_name` (for node mirrors), or stop that."""
        with self._store.transaction() as uow:
            project = uow.identity.project_by_name(project_name)
            if project is None or not uow.identity.set_anonymous_pull(project.id, allowed):
                raise NotFound(f"project {project_name!r} does not exist", field="project")

    def set_stored_bytes_quota(self, project_name: str, quota: int | None) -> None:
        """Cap what the project's caches may store (each blob once), or lift the cap; its
        least recently pulled caches are evicted when a build would go over it."""
        if quota is not None and quota < 0:
            raise InvalidInput("the quota must not be negative", field="quota")
        with self._store.transaction() as uow:
            project = uow.identity.project_by_name(project_name)
            if project is None or not uow.identity.set_stored_bytes_quota(project.id, quota):
                raise NotFound(f"project {project_name!r} does not exist", field="project")

    def issue_token(
        self, project_name: str, role: Role, expires_in: timedelta | None = None
    ) -> IssuedCredential:
        project = self.ensure_project(project_name)
        token = new_token()
        credential = self._new_credential(project, role, expires_in, token_sha256=hash_token(token))
        return IssuedCredential(project.id, project.name, credential.id, role, token=token)

    def issue_access_key(
        self, project_name: str, role: Role, expires_in: timedelta | None = None
    ) -> IssuedCredential:
        project = self.ensure_project(project_name)
        access_key, secret_key = new_access_key_pair()
        credential = self._new_credential(
            project,
            role,
            expires_in,
            kind=CredentialKind.AKSK,
            access_key=access_key,
            secret_ciphertext=self._box.encrypt(secret_key.encode()),
        )
        return IssuedCredential(
            project.id,
            project.name,
            credential.id,
            role,
            access_key=access_key,
            secret_key=secret_key,
        )

    def _new_credential(
        self,
        project: Project,
        role: Role,
        expires_in: timedelta | None,
        *,
        kind: CredentialKind = CredentialKind.TOKEN,
        token_sha256: str | None = None,
        access_key: str | None = None,
        secret_ciphertext: bytes | None = None,
    ) -> Credential:
        now = self._clock.now()
        credential = Credential(
            id=uuid.uuid4().hex,
            project_id=project.id,
            role=role,
            token_sha256=token_sha256,
            created_at=now,
            expires_at=None if expires_in is None else now + expires_in,
            kind=kind,
            access_key=access_key,
            secret_ciphertext=secret_ciphertext,
        )
        with self._store.transaction() as uow:
            uow.identity.add_credential(credential)
        return credential

    def list_credentials(self, project_name: str | None = None) -> list[tuple[Credential, str]]:
        """Credentials with their project's name; never their secrets."""
        with self._store.transaction(read_only=True) as uow:
            project_id = None
            if project_name is not None:
                project = uow.identity.project_by_name(project_name)
                if project is None:
                    raise NotFound(f"project {project_name!r} does not exist")
                project_id = project.id
            listed = []
            names: dict[str, str] = {}
            for credential in uow.identity.credentials(project_id):
                if credential.project_id not in names:
                    owner = uow.identity.project_by_id(credential.project_id)
                    names[credential.project_id] = owner.name if owner else "?"
                listed.append((credential, names[credential.project_id]))
            return listed

    def revoke(self, credential_id: str) -> str:
        """Revoke at once; the id of the project the credential belonged to."""
        with self._store.transaction() as uow:
            credential = uow.identity.credential(credential_id)
            if credential is None:
                raise NotFound(f"credential {credential_id} does not exist")
            uow.identity.revoke_credential(credential_id, self._clock.now())
            return credential.project_id

    def credential_usable(self, credential_id: str) -> bool:
        """Whether the credential still works (not revoked, not expired); the operator's
        admin token always does."""
        if credential_id == ADMIN_CREDENTIAL_ID:
            return True
        with self._store.transaction(read_only=True) as uow:
            credential = uow.identity.credential(credential_id)
        return credential is not None and credential.usable(self._clock.now())

    # --- authentication -------------------------------------------------------------------

    def authenticate_token(self, token: str | None, project_hint: str | None = None) -> Principal:
        """The principal behind `token`. The admin token acts in the project named by
        `project_hint` (an id or a name), which it must name: it belongs to no project, and
        quietly acting in some default one made its calls see nothing."""
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
        return self._principal(credential, project_hint)

    def authenticate_signature(
        self, signed: SignedRequest, project_hint: str | None = None
    ) -> Principal:
        """Check an `SDK-HMAC-SHA256` signature as the Huawei SDKs make it."""
        sent_at = signing.parse_sdk_date(signed.sdk_date)
        if "x-sdk-date" not in signed.claim.signed_headers:
            raise Unauthenticated("the signature must cover the X-Sdk-Date header")
        if abs(self._clock.now() - sent_at) > SIGNATURE_SKEW:
            raise Unauthenticated("X-Sdk-Date is more than 15 minutes away from the server's time")
        with self._store.transaction(read_only=True) as uow:
            credential = uow.identity.credential_by_access_key(signed.claim.access_key)
        if credential is None or credential.secret_ciphertext is None:
            raise Unauthenticated("the access key is not known")
        try:
            secret_key = self._box.decrypt(credential.secret_ciphertext).decode()
        except SecretUndecryptable:
            raise Unreadable(
                "the server cannot decrypt this access key's secret with its secret key(s); "
                "an operator must check IMAGEDEPOT_SECRET_KEY or secret.key"
            ) from None
        expected = signing.sign(secret_key, signed.sdk_date, signed.canonical_request)
        if not hmac.compare_digest(expected, signed.claim.signature):
            raise Unauthenticated("the request signature does not match")
        return self._principal(credential, project_hint)

    def principal_of(self, credential_id: str, project_id: str) -> Principal:
        """The principal a console session stands for, checked again on every request: the
        credential must still be usable (a revoked one ends its sessions at once)."""
        if credential_id == ADMIN_CREDENTIAL_ID:
            return Principal(project_id, Role.ADMIN, ADMIN_CREDENTIAL_ID, system_admin=True)
        with self._store.transaction(read_only=True) as uow:
            credential = uow.identity.credential(credential_id)
        if credential is None:
            raise Unauthenticated("the credential behind this session is gone")
        return self._principal(credential, project_id)

    def _principal(self, credential: Credential, project_hint: str | None) -> Principal:
        if not credential.usable(self._clock.now()):
            state = "revoked" if credential.revoked_at else "expired"
            raise Unauthenticated(f"the credential has been {state}")
        if project_hint and project_hint != credential.project_id:
            raise Forbidden("X-Project-Id names a project this credential does not belong to")
        return Principal(credential.project_id, credential.role, credential.id)

    def _admin_project(self, hint: str | None) -> Project:
        if hint:
            with self._store.transaction(read_only=True) as uow:
                project = uow.identity.project_by_id(hint) or uow.identity.project_by_name(hint)
            if project is not None:
                return project
            raise Unauthenticated(f"project {hint!r} does not exist")
        raise Unauthenticated(
            f"the admin token acts in one project: send {PROJECT_HEADER}: <project name or id>",
            field=PROJECT_HEADER,
        )

    # --- authorisation --------------------------------------------------------------------

    def authorize(self, principal: Principal, action: str) -> None:
        if principal.system_admin or self._policy.allows(principal.role, action):
            return
        raise Forbidden(f"role {principal.role} may not {action}")
