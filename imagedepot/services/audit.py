"""The audit log: every state-changing call, who made it and how it ended."""

from __future__ import annotations

from imagedepot.ports import AuditEvent, AuditQuery, MetadataStore


class AuditService:
    def __init__(self, store: MetadataStore) -> None:
        self._store = store

    def record(self, event: AuditEvent) -> None:
        with self._store.transaction() as uow:
            uow.audit.add(event)

    def recent(self, project_id: str | None = None, limit: int = 100) -> list[AuditEvent]:
        with self._store.transaction(read_only=True) as uow:
            return uow.audit.recent(project_id, limit)

    def search(self, query: AuditQuery) -> list[AuditEvent]:
        """The newest events first that match the query's filters (project, part of the
        action, refused or not)."""
        with self._store.transaction(read_only=True) as uow:
            return uow.audit.search(query)
