"""Registry pull secrets: stored encrypted, read back only to authenticate a pull.

A secret is a Kubernetes-style `kubernetes.io/dockerconfigjson` document kept per
project as `namespace/name`; CCE's `building_config.image_pull_secrets` names them
as `namespace:name`. The clear text never leaves this module except as the
RegistryCredentials handed to the registry client.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from imagedepot.domain.errors import InvalidInput, NotFound, Unreadable
from imagedepot.ports import (
    Clock,
    MetadataStore,
    RegistryCredentials,
    SecretBox,
    SecretUndecryptable,
    StoredSecret,
)

DOCKER_CONFIG_JSON = "kubernetes.io/dockerconfigjson"
DNS_LABEL_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")
SECRET_NAME_RE = re.compile(r"^[a-z0-9](?:[-.a-z0-9]{0,251}[a-z0-9])?$")


KEY_CHECK: Final = "secret-key"
KEY_CHECK_TEXT: Final = b"imagedepot secret key check"


class WrongSecretKey(Exception):
    """This process's secret key is not the one the store's secrets are sealed with."""


@dataclass(frozen=True)
class SecretSummary:
    """What may be shown about a secret: everything but its data."""

    namespace: str
    name: str
    type: str
    servers: tuple[str, ...]
    created_at: datetime | None = None


def docker_config_json(server: str, username: str, password: str) -> bytes:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    document = {"auths": {server: {"username": username, "password": password, "auth": auth}}}
    return json.dumps(document).encode()


def normalise_server(server: str) -> str:
    """`https://index.docker.io/v1/` and `docker.io` name the same registry; so do `http://h:5000/` and `h:5000`."""
    host = server.strip()
    for prefix in ("https://", "http://"):
        host = host.removeprefix(prefix)
    host = host.split("/", 1)[0]
    if host in {"index.docker.io", "registry-1.docker.io"}:
        return "docker.io"
    return host


class SecretService:
    def __init__(self, store: MetadataStore, box: SecretBox, clock: Clock) -> None:
        self._store = store
        self._box = box
        self._clock = clock

    def put_docker_registry(
        self, project_id: str, namespace: str, name: str, server: str, username: str, password: str
    ) -> SecretSummary:
        return self.put_docker_config(
            project_id, namespace, name, docker_config_json(server, username, password)
        )

    def put_docker_config(
        self, project_id: str, namespace: str, name: str, config_json: bytes
    ) -> SecretSummary:
        if not DNS_LABEL_RE.match(namespace):
            raise InvalidInput(f"namespace {namespace!r} is not a DNS label", field="namespace")
        if not SECRET_NAME_RE.match(name):
            raise InvalidInput(f"name {name!r} is not a DNS subdomain", field="name")
        servers = tuple(sorted(_auths(config_json)))
        secret = StoredSecret(
            project_id=project_id,
            namespace=namespace,
            name=name,
            type=DOCKER_CONFIG_JSON,
            ciphertext=self._box.encrypt(config_json),
            created_at=self._clock.now(),
        )
        with self._store.transaction() as uow:
            uow.secrets.put(secret)
        return SecretSummary(namespace, name, DOCKER_CONFIG_JSON, servers, secret.created_at)

    def summaries(self, project_id: str, namespace: str | None = None) -> list[SecretSummary]:
        """The project's secrets (of one namespace), without decrypting anything."""
        with self._store.transaction(read_only=True) as uow:
            stored = uow.secrets.list(project_id, namespace)
        return [SecretSummary(s.namespace, s.name, s.type, (), s.created_at) for s in stored]

    def reveal(self, project_id: str, namespace: str, name: str) -> tuple[SecretSummary, bytes]:
        """One secret and its clear data, for a caller the policy lets read secrets."""
        with self._store.transaction(read_only=True) as uow:
            stored = uow.secrets.get(project_id, namespace, name)
        if stored is None:
            raise NotFound(f"secret {namespace}/{name} not found")
        summary = SecretSummary(namespace, name, stored.type, (), stored.created_at)
        return summary, self._open(stored)

    def exists(self, project_id: str, namespace: str, name: str) -> bool:
        with self._store.transaction(read_only=True) as uow:
            return uow.secrets.get(project_id, namespace, name) is not None

    def delete(self, project_id: str, namespace: str, name: str) -> None:
        with self._store.transaction() as uow:
            if not uow.secrets.delete(project_id, namespace, name):
                raise NotFound(f"secret {namespace}/{name} not found")

    def reseal_all(self) -> int:
        """Re-encrypt every stored secret (and access key secret) under the box's newest key."""
        with self._store.transaction() as uow:
            check = uow.key_checks.sealed(KEY_CHECK)
            if check is not None:
                uow.key_checks.put(KEY_CHECK, self._box.rotate(check))
            return uow.secrets.reseal_all(self._box.rotate) + (
                uow.identity.reseal_credential_secrets(self._box.rotate)
            )

    def check_key(self) -> None:
        """Refuse (WrongSecretKey) a key that cannot open what the store was sealed with: a
        replica started with another IMAGEDEPOT_SECRET_KEY would fail every secret it met and
        every pull token the other replicas signed."""
        with self._store.transaction() as uow:
            stored = uow.key_checks.add_if_absent(KEY_CHECK, self._box.encrypt(KEY_CHECK_TEXT))
        try:
            opened = self._box.decrypt(stored)
        except SecretUndecryptable:
            opened = b""
        if opened != KEY_CHECK_TEXT:
            raise WrongSecretKey(
                "the secret key (IMAGEDEPOT_SECRET_KEY, else secret.key in the data dir) cannot "
                "open what this database was sealed with: every replica must use the same key"
            )

    def credentials_for(
        self, project_id: str, secret_refs: tuple[str, ...], registry: str
    ) -> RegistryCredentials | None:
        """The first of the named secrets (`namespace:name`) that holds a login for `registry`."""
        wanted = normalise_server(registry)
        for ref in secret_refs:
            namespace, _, name = ref.partition(":")
            with self._store.transaction(read_only=True) as uow:
                stored = uow.secrets.get(project_id, namespace, name)
            if stored is None:
                continue
            for server, login in _auths(self._open(stored)).items():
                if normalise_server(server) == wanted:
                    return login
        return None

    def _open(self, stored: StoredSecret) -> bytes:
        try:
            return self._box.decrypt(stored.ciphertext)
        except SecretUndecryptable:
            raise Unreadable(
                f"secret {stored.namespace}/{stored.name} cannot be decrypted with the server's "
                "secret key(s): it was sealed under another key (check IMAGEDEPOT_SECRET_KEY or "
                "secret.key in the data dir) or is damaged; create it again to replace it",
                field="secret",
            ) from None


def _auths(config_json: bytes) -> dict[str, RegistryCredentials]:
    try:
        document = json.loads(config_json)
        auths = document["auths"]
        if not isinstance(auths, dict):
            raise TypeError("auths is not an object")
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidInput(
            f".dockerconfigjson is not a docker config: {error}", field="data[.dockerconfigjson]"
        ) from None
    logins: dict[str, RegistryCredentials] = {}
    for server, entry in auths.items():
        if not isinstance(entry, dict):
            continue
        username, password = entry.get("username"), entry.get("password")
        if (not username or not password) and entry.get("auth"):
            try:
                username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                continue
        if username and password:
            logins[server] = RegistryCredentials(str(username), str(password))
    return logins
