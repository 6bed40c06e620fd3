"""The image cache repository of the SQL metadata store: rows, worker leases, and the change
log that gives every cache write one global revision.

Every write (add, save, remove) takes the next value of one counter row and logs the cache as
it was after the write. Taking the counter locks its row until commit, so writers commit in
revision order: a reader that has seen revision N has seen every change up to N, which is
what lets a watcher resume from a list's revision without missing anything, deletions
included. Leases and last-use times are bookkeeping, not changes, and take no revision.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    delete,
    false,
    func,
    or_,
    select,
    update,
)

from imagedepot.adapters.db import tables
from imagedepot.adapters.db.statements import insert_or_conflict, update_if_version
from imagedepot.domain.caches import (
    CacheChange,
    CacheSpec,
    CacheStatus,
    ChangeType,
    ImageCache,
    ImageProgress,
    RegistryAccess,
)
from imagedepot.domain.errors import Conflict

EXPIRABLE: Final = (CacheStatus.AVAILABLE, CacheStatus.FAILED, CacheStatus.UNAVAILABLE)
REVISION_COUNTER: Final = "cache_revision"
COMPACTED_COUNTER: Final = "cache_changes_compacted"
_CLAIM_ATTEMPTS: Final = 5
_TIMES: Final = (
    "created_at",
    "updated_at",
    "deletion_requested_at",
    "last_used_at",
    "expires_at",
    "phase_since",
    "refresh_due_at",
)


def spec_to_json(spec: CacheSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "images": list(spec.images),
        "size_gib": spec.size_gib,
        "retention_days": spec.retention_days,
        "cluster": spec.cluster,
        "pull_secrets": list(spec.pull_secrets),
        "registries": [asdict(registry) for registry in spec.registries],
        "timeout_minutes": spec.timeout_minutes,
        "refresh_seconds": spec.refresh_seconds,
    }


def spec_from_json(data: Mapping[str, Any]) -> CacheSpec:
    defaults = CacheSpec(name="", images=())
    return CacheSpec(
        name=data["name"],
        images=tuple(data["images"]),
        size_gib=data.get("size_gib", defaults.size_gib),
        retention_days=data.get("retention_days", defaults.retention_days),
        cluster=data.get("cluster"),
        pull_secrets=tuple(data.get("pull_secrets", ())),
        registries=tuple(
            RegistryAccess(
                server=entry["server"],
                plain_http=entry.get("plain_http", False),
                insecure_skip_verify=entry.get("insecure_skip_verify", False),
                pull_secret=entry.get("pull_secret"),
            )
            for entry in data.get("registries", ())
        ),
        timeout_minutes=data.get("timeout_minutes", defaults.timeout_minutes),
        refresh_seconds=data.get("refresh_seconds", 0),
    )


def _progress_from_json(data: Mapping[str, Any]) -> ImageProgress:
    return ImageProgress(
        image=data["image"],
        digest=data.get("digest"),
        size_bytes=data.get("size_bytes", 0),
        pulled_bytes=data.get("pulled_bytes", 0),
        done=data.get("done", False),
        checked_at=_instant(data.get("checked_at")),
        upstream_error=data.get("upstream_error"),
        upstream_error_at=_instant(data.get("upstream_error_at")),
        moved_from=data.get("moved_from"),
        moved_at=_instant(data.get("moved_at")),
    )


def _progress_to_json(progress: ImageProgress) -> dict[str, Any]:
    values = asdict(progress)
    for key in ("checked_at", "upstream_error_at", "moved_at"):
        values[key] = None if values[key] is None else values[key].isoformat()
    return values


def _instant(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _cache_values(cache: ImageCache) -> dict[str, Any]:
    """Every stored column of `cache` except the lease, which belongs to the store."""
    return {
        "id": cache.id,
        "project_id": cache.project_id,
        "name": cache.spec.name,
        "spec": spec_to_json(cache.spec),
        "status": cache.status.value,
        "reason": cache.reason,
        "message": cache.message,
        "images": [_progress_to_json(image) for image in cache.images],
        "labels": dict(cache.labels),
        "annotations": dict(cache.annotations),
        "resource_version": cache.resource_version,
        "generation": cache.generation,
        "created_at": cache.created_at,
        "updated_at": cache.updated_at,
        "deletion_requested_at": cache.deletion_requested_at,
        "last_used_at": cache.last_used_at,
        "expires_at": cache.expires_at,
        "finalizers": list(cache.finalizers),
        "deletion_grace_seconds": cache.deletion_grace_seconds,
        "data_released": cache.data_released,
        "phase_since": cache.phase_since,
        "refresh_due_at": cache.refresh_due_at,
    }


def _cache_from_row(row: Mapping[Any, Any]) -> ImageCache:
    return ImageCache(
        id=row["id"],
        project_id=row["project_id"],
        spec=spec_from_json(row["spec"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        status=CacheStatus(row["status"]),
        reason=row["reason"],
        message=row["message"],
        images=[_progress_from_json(image) for image in row["images"]],
        labels=dict(row["labels"]),
        annotations=dict(row["annotations"]),
        resource_version=row["resource_version"],
        generation=row["generation"],
        deletion_requested_at=row["deletion_requested_at"],
        last_used_at=row["last_used_at"],
        finalizers=list(row["finalizers"]),
        deletion_grace_seconds=row["deletion_grace_seconds"],
        data_released=bool(row["data_released"]),
        phase_since=row.get("phase_since"),
        refresh_due_at=row.get("refresh_due_at"),
    )


def _document(cache: ImageCache) -> dict[str, Any]:
    """The cache as JSON, for the change log."""
    values = _cache_values(cache)
    for key in _TIMES:
        if values[key] is not None:
            values[key] = values[key].isoformat()
    return values


def _cache_from_document(document: Mapping[str, Any]) -> ImageCache:
    values = dict(document)
    for key in _TIMES:
        if values.get(key) is not None:
            values[key] = datetime.fromisoformat(values[key])
    return _cache_from_row(values)


_CACHE_COLUMNS = [
    column for column in tables.caches.c if column.name not in ("lease_holder", "lease_until")
]


class SqlCacheRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    # --- revisions and the change log ---

    def _counter(self, name: str) -> int:
        c = tables.counters.c
        value = self._connection.execute(select(c.value).where(c.name == name)).scalar_one()
        return int(value)

    def _next_revision(self) -> int:
        c = tables.counters.c
        statement = (
            update(tables.counters)
            .where(c.name == REVISION_COUNTER)
            .values(value=c.value + 1)
            .returning(c.value)
        )
        return int(self._connection.execute(statement).scalar_one())

    def _log(self, change: ChangeType, cache: ImageCache, at: datetime) -> None:
        self._connection.execute(
            tables.cache_changes.insert().values(
                revision=cache.resource_version,
                project_id=cache.project_id,
                cache_id=cache.id,
                type=change.value,
                cache=_document(cache),
                at=at,
            )
        )

    def revision(self) -> int:
        return self._counter(REVISION_COUNTER)

    def compacted_revision(self) -> int:
        return self._counter(COMPACTED_COUNTER)

    def changes_after(
        self, project_id: str, revision: int, limit: int
    ) -> builtins.list[CacheChange]:
        c = tables.cache_changes.c
        rows = self._connection.execute(
            select(c.revision, c.type, c.cache)
            .where(c.project_id == project_id, c.revision > revision)
            .order_by(c.revision)
            .limit(limit)
        ).mappings()
        return [
            CacheChange(
                row["revision"], ChangeType(row["type"]), _cache_from_document(row["cache"])
            )
            for row in rows
        ]

    def compact_changes(self, before: datetime) -> int:
        c = tables.cache_changes.c
        newest_old = self._connection.execute(
            select(c.revision).where(c.at < before).order_by(c.revision.desc()).limit(1)
        ).scalar()
        if newest_old is None:
            return 0
        removed = self._connection.execute(
            delete(tables.cache_changes).where(c.revision <= newest_old)
        ).rowcount
        counter = tables.counters.c
        self._connection.execute(
            update(tables.counters)
            .where(counter.name == COMPACTED_COUNTER, counter.value < newest_old)
            .values(value=newest_old)
        )
        return int(removed)

    # --- the caches ---

    def add(self, cache: ImageCache) -> None:
        c = tables.caches.c
        taken = self._connection.execute(
            select(c.id).where(c.project_id == cache.project_id, c.name == cache.spec.name)
        ).first()
        message = f"an image cache named {cache.spec.name!r} already exists"
        if taken is not None:
            raise Conflict(message, field="name")
        cache.resource_version = self._next_revision()
        insert_or_conflict(
            self._connection, tables.caches.insert().values(_cache_values(cache)), message
        )
        self._log(ChangeType.ADDED, cache, cache.updated_at)

    def get(self, cache_id: str, project_id: str | None = None) -> ImageCache | None:
        c = tables.caches.c
        query = select(*_CACHE_COLUMNS).where(c.id == cache_id)
        if project_id is not None:
            query = query.where(c.project_id == project_id)
        row = self._connection.execute(query).mappings().first()
        return None if row is None else _cache_from_row(row)

    def list(self, project_id: str, name: str | None = None) -> builtins.list[ImageCache]:
        c = tables.caches.c
        query = select(*_CACHE_COLUMNS).where(c.project_id == project_id)
        if name is not None:
            query = query.where(c.name == name)
        rows = self._connection.execute(query.order_by(c.created_at, c.id)).mappings()
        return [_cache_from_row(row) for row in rows]

    def save(self, cache: ImageCache, expected_version: int) -> bool:
        c = tables.caches.c
        revision = self._next_revision()
        values = _cache_values(cache)
        del values["id"]
        values["resource_version"] = revision
        if not update_if_version(
            self._connection, tables.caches, cache.id, c.resource_version, expected_version, values
        ):
            return False
        cache.resource_version = revision
        self._log(ChangeType.MODIFIED, cache, cache.updated_at)
        return True

    def remove(self, cache_id: str, at: datetime) -> bool:
        cache = self.get(cache_id)
        if cache is None:
            return False
        # The counter first, then the row, as every writer does: no two lock in the other
        # order (PostgreSQL would report a deadlock).
        cache.resource_version = self._next_revision()
        c = tables.caches.c
        self._connection.execute(delete(tables.caches).where(c.id == cache_id))
        self._log(ChangeType.DELETED, cache, at)
        return True

    # --- worker leases and bookkeeping ---

    def claim(
        self,
        statuses: tuple[CacheStatus, ...],
        holder: str,
        now: datetime,
        lease_until: datetime,
        dead_holders: tuple[str, ...] = (),
        *,
        refresh_due: bool = False,
    ) -> ImageCache | None:
        if not statuses:
            return None
        c = tables.caches.c
        wanted: ColumnElement[bool] = c.status.in_([status.value for status in statuses])
        if refresh_due:
            wanted = or_(
                wanted,
                and_(c.status == CacheStatus.AVAILABLE.value, c.refresh_due_at <= now),
            )
        claimable: builtins.list[ColumnElement[bool]] = [
            wanted,
            # A released cache waits only for others' finalizers; the worker has no work there.
            c.data_released == false(),
            or_(
                c.lease_holder.is_(None),
                c.lease_until.is_(None),
                c.lease_until < now,
                c.lease_holder.in_(dead_holders) if dead_holders else false(),
            ),
        ]
        for _ in range(_CLAIM_ATTEMPTS):
            # PostgreSQL: lock the candidate and pass over rows another claimer has locked.
            # SQLite ignores FOR UPDATE; its write transaction already excludes other writers.
            candidate = self._connection.execute(
                select(c.id)
                .where(*claimable)
                .order_by(c.updated_at, c.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).scalar()
            if candidate is None:
                return None
            # The same conditions again: the update only wins if the lease is still free.
            result = self._connection.execute(
                update(tables.caches)
                .where(c.id == candidate, *claimable)
                .values(lease_holder=holder, lease_until=lease_until)
            )
            if result.rowcount == 1:
                return self.get(candidate)
        return None

    def renew(self, cache_id: str, holder: str, lease_until: datetime) -> bool:
        c = tables.caches.c
        result = self._connection.execute(
            update(tables.caches)
            .where(c.id == cache_id, c.lease_holder == holder)
            .values(lease_until=lease_until)
        )
        return result.rowcount == 1

    def release(self, cache_id: str, holder: str) -> None:
        c = tables.caches.c
        self._connection.execute(
            update(tables.caches)
            .where(c.id == cache_id, c.lease_holder == holder)
            .values(lease_holder=None, lease_until=None)
        )

    def lease_holders(self) -> builtins.list[str]:
        c = tables.caches.c
        query = (
            select(c.lease_holder)
            .where(c.lease_holder.is_not(None))
            .distinct()
            .order_by(c.lease_holder)
        )
        return [holder for holder in self._connection.execute(query).scalars() if holder]

    def expired(self, now: datetime) -> builtins.list[ImageCache]:
        c = tables.caches.c
        query = (
            select(*_CACHE_COLUMNS)
            .where(
                c.expires_at.is_not(None),
                c.expires_at <= now,
                c.status.in_([status.value for status in EXPIRABLE]),
            )
            .order_by(c.expires_at, c.id)
        )
        return [_cache_from_row(row) for row in self._connection.execute(query).mappings()]

    def available(
        self, project_ids: Sequence[str], *, building_of: str | None = None
    ) -> builtins.list[ImageCache]:
        c = tables.caches.c
        wanted = and_(c.project_id.in_(list(project_ids)), c.status == CacheStatus.AVAILABLE.value)
        if building_of is not None:
            building = and_(c.project_id == building_of, c.status == CacheStatus.CREATING.value)
            wanted = or_(wanted, building)
        elif not project_ids:
            return []
        query = select(*_CACHE_COLUMNS).where(wanted).order_by(c.created_at.desc(), c.id.desc())
        return [_cache_from_row(row) for row in self._connection.execute(query).mappings()]

    def building(self, project_id: str) -> builtins.list[ImageCache]:
        c = tables.caches.c
        query = (
            select(*_CACHE_COLUMNS)
            .where(c.project_id == project_id, c.status == CacheStatus.CREATING.value)
            .order_by(c.created_at.desc(), c.id.desc())
        )
        return [_cache_from_row(row) for row in self._connection.execute(query).mappings()]

    def count_by_status(self) -> dict[str, int]:
        c = tables.caches.c
        rows = self._connection.execute(select(c.status, func.count()).group_by(c.status))
        return {status: int(count) for status, count in rows}

    def record_use(self, cache_id: str, at: datetime) -> bool:
        c = tables.caches.c
        result = self._connection.execute(
            update(tables.caches)
            .where(c.id == cache_id, or_(c.last_used_at.is_(None), c.last_used_at < at))
            .values(last_used_at=at)
        )
        return result.rowcount == 1
