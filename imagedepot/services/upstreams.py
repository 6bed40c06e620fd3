"""Managing the registries a project may pull through: add (or replace), list, remove.

The pull secret an upstream names must exist when it is added, so a typo is refused then and
not found out on a node's first pull; it may be replaced later like any secret.
"""

from __future__ import annotations

from dataclasses import replace

from imagedepot.domain.errors import InvalidInput, NotFound
from imagedepot.domain.upstreams import Upstream
from imagedepot.ports import Clock, MetadataStore


class UpstreamService:
    def __init__(self, store: MetadataStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def put(self, upstream: Upstream) -> Upstream:
        """Add the upstream, or replace the project's one for the same registry."""
        upstream.validate()
        with self._store.transaction() as uow:
            if upstream.pull_secret is not None:
                namespace, _, name = upstream.pull_secret.partition(":")
                if uow.secrets.get(upstream.project_id, namespace, name) is None:
                    raise InvalidInput(
                        f"pull_secret {upstream.pull_secret} does not exist in this project",
                        field="pull_secret",
                    )
            existing = uow.upstreams.get(upstream.project_id, upstream.registry)
            created_at = existing.created_at if existing is not None else self._clock.now()
            stored = replace(upstream, created_at=created_at)
            uow.upstreams.put(stored)
        return stored

    def list(self, project_id: str) -> list[Upstream]:
        with self._store.transaction(read_only=True) as uow:
            return uow.upstreams.list(project_id)

    def get(self, project_id: str, registry: str) -> Upstream | None:
        with self._store.transaction(read_only=True) as uow:
            return uow.upstreams.get(project_id, registry)

    def remove(self, project_id: str, registry: str) -> None:
        with self._store.transaction() as uow:
            if not uow.upstreams.remove(project_id, registry):
                raise NotFound(f"no upstream {registry} in this project", field="registry")
