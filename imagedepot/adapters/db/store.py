"""`SqlMetadataStore`: the MetadataStore port on SQLAlchemy Core, for SQLite and PostgreSQL.

One code path serves both backends; where they differ (transaction start on SQLite, row locks
and the psycopg driver on PostgreSQL, upserts) the difference is kept in this module. Opening a
store brings its schema to the newest Alembic revision.
"""

from __future__ import annotations

import builtins
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    RowMapping,
    and_,
    case,
    create_engine,
    delete,
    event,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool, StaticPool
from sqlalchemy.sql import Subquery

from imagedepot.adapters.db import tables
from imagedepot.adapters.db.cache_store import SqlCacheRepository
from imagedepot.adapters.db.coordination_store import (
    SqlBlobFetchRepository,
    SqlBlobLockRepository,
    SqlBlobOrphanRepository,
    SqlHeartbeatRepository,
    SqlKeyCheckRepository,
)
from imagedepot.adapters.db.statements import chunks, insert_or_conflict, upsert
from imagedepot.adapters.db.upstream_store import SqlUpstreamRepository
from imagedepot.adapters.db.vmimage_store import SqlVmImageRepository
from imagedepot.domain.caches import CacheStatus
from imagedepot.domain.identity import Credential, CredentialKind, Project, Role
from imagedepot.ports import (
    REFUSED_STATUS,
    AuditEvent,
    AuditQuery,
    AuditRepository,
    BlobFetchRepository,
    BlobInfo,
    BlobLockRepository,
    BlobOrphanRepository,
    BlobRefRepository,
    BlobUsage,
    CacheRepository,
    ConsoleSession,
    ConsoleSessionRepository,
    HeartbeatRepository,
    IdentityRepository,
    KeyCheckRepository,
    ProjectSummary,
    SecretRepository,
    StoredSecret,
    StoreUnavailable,
    UpstreamRepository,
    VmImageRepository,
)

if TYPE_CHECKING:
    from datetime import datetime

    from alembic.config import Config

    from imagedepot.ports import MetadataStore

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
SCHEMA_HEAD: Final = "0012"
"""The newest migration's revision; a test checks it against the migrations directory."""
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
POOL_SIZE: Final = 32
"""Connections a process keeps, and the most it opens: the API's threadpool (40 threads), the
event loop's executor and the worker share them, and a thread past the 32nd waits for one.
All of them stay open: a pool smaller than what is in use at once closed a connection at
every return and opened one at the next checkout, which under load was a PostgreSQL backend
started (or a SQLite file opened and set up) per transaction."""
PING_AFTER_IDLE_SECONDS: Final = 1.0
"""A pooled PostgreSQL connection unused for longer than this is pinged before it is handed
out (and replaced when the ping fails, as after a server restart); a busy server's connections
are never idle that long, so they skip the round trip that pinging every checkout cost."""

# Read by the SQLite "begin" hook: which BEGIN this connection's next transaction uses.
_SQLITE_BEGIN_OPTION: Final = "imagedepot_sqlite_begin"
_SQLITE_BEGIN: Final = {"immediate": "BEGIN IMMEDIATE", "deferred": "BEGIN DEFERRED"}
# Any fixed number: serialises schema upgrades of processes starting at the same time.
_PG_MIGRATION_LOCK: Final = 0x1D_DE_90_7D


# --- engine -------------------------------------------------------------------------------


def database_url(url: str | URL) -> URL:
    """Parse `url`; a bare `postgresql://` (or `postgres://`) gets the psycopg 3 driver."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_in_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _use_wal(cursor: sqlite3.Cursor) -> None:
    """Switch the file to WAL unless it already is (WAL is a property of the file).

    The switch needs an exclusive lock and fails at once ("database is locked") instead of
    waiting while another connection writes, as when processes starting together race to
    create and migrate a fresh database; so it is retried until the file is WAL.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
        try:
            # An in-memory database answers "memory" and stays so: done either way.
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _on_sqlite_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    assert isinstance(dbapi_connection, sqlite3.Connection)
    # Take BEGIN away from the sqlite3 module (which would defer it to the first write) so the
    # "begin" hook can start write transactions with BEGIN IMMEDIATE: the write lock is then
    # taken up front, where busy_timeout waits for it, instead of failing mid-transaction.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS:d}")
        cursor.execute("PRAGMA foreign_keys = ON")
        _use_wal(cursor)
    finally:
        cursor.close()


def _on_sqlite_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(_SQLITE_BEGIN_OPTION, "immediate")
    connection.exec_driver_sql(_SQLITE_BEGIN[mode])


_IDLE_SINCE: Final = "imagedepot_idle_since"


def _ping_when_idle(engine: Engine) -> None:
    """`pool_pre_ping` for connections that sat in the pool past PING_AFTER_IDLE_SECONDS only.

    A connection the server dropped while it was in use fails its statement instead, which
    SQLAlchemy takes as a disconnect: it discards every connection of the pool opened before,
    so one failed transaction (StoreUnavailable, a 503) refreshes the pool."""

    def returned(dbapi_connection: DBAPIConnection | None, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    def checked_out(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _: Any) -> None:
        idle_since = record.info.pop(_IDLE_SINCE, None)
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
            dbapi_connection.rollback()  # in case the ping began a transaction
        except engine.dialect.loaded_dbapi.Error as error:
            # The pool closes this connection and checks out another (a fresh one, unpinged).
            raise DisconnectionError(str(error)) from error

    event.listen(engine, "checkin", returned)
    event.listen(engine, "checkout", checked_out)


def create_engine_for(url: str | URL) -> Engine:
    """An engine configured for how the store uses it (threads, WAL, driver)."""
    parsed = database_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if _sqlite_in_memory(parsed):
            # One shared connection, or every checkout would see its own empty database.
            engine = create_engine(
                parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            assert parsed.database is not None
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                parsed,
                poolclass=QueuePool,
                pool_size=POOL_SIZE,
                max_overflow=0,
                pool_timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
                connect_args={"check_same_thread": False},
            )
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    if backend == "postgresql":
        engine = create_engine(parsed, pool_size=POOL_SIZE, max_overflow=0)
        _ping_when_idle(engine)
        return engine
    raise ValueError(f"unsupported database {parsed.drivername!r}: use sqlite:/// or postgresql://")


# --- migrations ---------------------------------------------------------------------------


def _alembic_config(connection: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    # Config values go through configparser interpolation, where '%' is special.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def schema_revision(connection: Connection) -> str | None:
    """The Alembic revision the database is at; None for a fresh database."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to the newest revision in one transaction; a no-op when already there.

    Alembic (slow to import) is loaded only when there is something to upgrade, which keeps
    the CLI's offline commands quick.
    """
    with engine.connect() as connection:
        if schema_revision(connection) == SCHEMA_HEAD:
            return
    from alembic import command

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
            )
        command.upgrade(_alembic_config(connection), "head")


def migrate(url: str) -> None:
    """Upgrade the database at `url` to the newest schema (what opening a store does)."""
    engine = create_engine_for(url)
    try:
        upgrade_schema(engine)
    finally:
        engine.dispose()


# --- repositories -------------------------------------------------------------------------


class SqlBlobRefRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add_refs(self, owner_id: str, blobs: builtins.list[BlobInfo]) -> None:
        unique = {blob.digest: blob for blob in blobs}
        if not unique:
            return
        rows = [
            {"owner_id": owner_id, "digest": b.digest, "size": b.size, "media_type": b.media_type}
            for b in unique.values()
        ]
        statement = upsert(self._connection, tables.blob_refs).on_conflict_do_nothing(
            index_elements=["owner_id", "digest"]
        )
        self._connection.execute(statement, rows)

    def refs_of(self, owner_id: str) -> builtins.list[BlobInfo]:
        c = tables.blob_refs.c
        rows = self._connection.execute(
            select(c.digest, c.size, c.media_type).where(c.owner_id == owner_id).order_by(c.digest)
        )
        return [BlobInfo(digest=r.digest, size=r.size, media_type=r.media_type) for r in rows]

    def drop_refs(self, owner_id: str) -> None:
        c = tables.blob_refs.c
        self._connection.execute(delete(tables.blob_refs).where(c.owner_id == owner_id))

    def referenced(self, digests: builtins.list[str]) -> set[str]:
        c = tables.blob_refs.c
        found: set[str] = set()
        for chunk in chunks(sorted(set(digests))):
            query = select(c.digest).where(c.digest.in_(chunk)).distinct()
            found.update(self._connection.execute(query).scalars())
        return found

    def all_referenced(self) -> set[str]:
        c = tables.blob_refs.c
        return set(self._connection.execute(select(c.digest).distinct()).scalars())

    def recorded_sizes(self) -> dict[str, int]:
        c = tables.blob_refs.c
        rows = self._connection.execute(select(c.digest, func.max(c.size)).group_by(c.digest))
        return {digest: int(size) for digest, size in rows}

    def referenced_totals(self) -> tuple[int, int]:
        c = tables.blob_refs.c
        distinct = select(c.digest, func.max(c.size).label("size")).group_by(c.digest).subquery()
        count, total = self._connection.execute(
            select(func.count(), func.coalesce(func.sum(distinct.c.size), 0))
        ).one()
        return int(count), int(total)

    def referenced_by_settled_owners(self) -> set[str]:
        refs, caches = tables.blob_refs.c, tables.caches.c
        query = (
            select(refs.digest)
            .select_from(tables.blob_refs.outerjoin(tables.caches, caches.id == refs.owner_id))
            .where(or_(caches.id.is_(None), caches.status != CacheStatus.CREATING.value))
            .distinct()
        )
        return set(self._connection.execute(query).scalars())

    def owners_of(self, digest: str, owner_ids: Sequence[str]) -> dict[str, BlobInfo]:
        c = tables.blob_refs.c
        found: dict[str, BlobInfo] = {}
        for chunk in chunks(sorted(set(owner_ids))):
            rows = self._connection.execute(
                select(c.owner_id, c.size, c.media_type).where(
                    c.digest == digest, c.owner_id.in_(chunk)
                )
            )
            for row in rows:
                found[row.owner_id] = BlobInfo(digest, row.size, row.media_type)
        return found

    def held_by_project(
        self, project_id: str, digests: Sequence[str], excluding_owner: str
    ) -> set[str]:
        refs, caches = tables.blob_refs.c, tables.caches.c
        shown = (CacheStatus.AVAILABLE.value, CacheStatus.UNAVAILABLE.value)
        found: set[str] = set()
        for chunk in chunks(sorted(set(digests))):
            query = (
                select(refs.digest)
                .join_from(tables.blob_refs, tables.caches, refs.owner_id == caches.id)
                .where(
                    refs.digest.in_(chunk),
                    caches.project_id == project_id,
                    caches.id != excluding_owner,
                    caches.status.in_(shown),
                )
                .distinct()
            )
            found.update(self._connection.execute(query).scalars())
        return found

    def available_ref(self, digest: str, project_ids: Sequence[str]) -> BlobInfo | None:
        if not project_ids:
            return None
        refs, caches = tables.blob_refs.c, tables.caches.c
        row = self._connection.execute(
            select(refs.size, refs.media_type)
            .join_from(tables.blob_refs, tables.caches, refs.owner_id == caches.id)
            .where(
                refs.digest == digest,
                caches.project_id.in_(list(project_ids)),
                caches.status == CacheStatus.AVAILABLE.value,
            )
            .limit(1)
        ).first()
        return None if row is None else BlobInfo(digest, row.size, row.media_type)

    def _settled_cache_refs(self) -> Subquery:
        """The refs of caches past their build, with each cache's project."""
        refs, caches = tables.blob_refs.c, tables.caches.c
        return (
            select(caches.project_id, refs.owner_id, refs.digest, refs.size)
            .join_from(tables.blob_refs, tables.caches, refs.owner_id == caches.id)
            .where(caches.status != CacheStatus.CREATING.value)
            .subquery()
        )

    def cache_usage_by_project(self) -> dict[str, BlobUsage]:
        held = self._settled_cache_refs()
        referenced = self._connection.execute(
            select(
                held.c.project_id,
                func.count(func.distinct(held.c.owner_id)),
                func.sum(held.c.size),
            ).group_by(held.c.project_id)
        ).all()
        distinct = (
            select(held.c.project_id, held.c.digest, func.max(held.c.size).label("size"))
            .group_by(held.c.project_id, held.c.digest)
            .subquery()
        )
        stored = {
            row[0]: (int(row[1]), int(row[2]))
            for row in self._connection.execute(
                select(distinct.c.project_id, func.count(), func.sum(distinct.c.size)).group_by(
                    distinct.c.project_id
                )
            )
        }
        return {
            project_id: BlobUsage(
                caches=int(caches),
                referenced_bytes=int(total),
                stored_bytes=stored[project_id][1],
                blobs=stored[project_id][0],
            )
            for project_id, caches, total in referenced
        }

    def cache_usage_total(self) -> BlobUsage:
        held = self._settled_cache_refs()
        caches, referenced = self._connection.execute(
            select(
                func.count(func.distinct(held.c.owner_id)), func.coalesce(func.sum(held.c.size), 0)
            )
        ).one()
        distinct = (
            select(held.c.digest, func.max(held.c.size).label("size"))
            .group_by(held.c.digest)
            .subquery()
        )
        blobs, stored = self._connection.execute(
            select(func.count(), func.coalesce(func.sum(distinct.c.size), 0))
        ).one()
        return BlobUsage(int(caches), int(referenced), int(stored), int(blobs))


def _project_from_row(row: RowMapping) -> Project:
    return Project(id=row["id"], name=row["name"], created_at=row["created_at"])


class SqlIdentityRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add_project(self, project: Project) -> None:
        statement = tables.projects.insert().values(
            id=project.id, name=project.name, created_at=project.created_at
        )
        insert_or_conflict(
            self._connection, statement, f"a project named {project.name!r} already exists"
        )

    def project_by_name(self, name: str) -> Project | None:
        c = tables.projects.c
        row = self._connection.execute(select(tables.projects).where(c.name == name))
        found = row.mappings().first()
        return None if found is None else _project_from_row(found)

    def project_by_id(self, project_id: str) -> Project | None:
        c = tables.projects.c
        row = self._connection.execute(select(tables.projects).where(c.id == project_id))
        found = row.mappings().first()
        return None if found is None else _project_from_row(found)

    def add_credential(self, credential: Credential) -> None:
        statement = tables.credentials.insert().values(
            id=credential.id,
            project_id=credential.project_id,
            role=credential.role.value,
            token_sha256=credential.token_sha256,
            created_at=credential.created_at,
            expires_at=credential.expires_at,
            kind=credential.kind.value,
            access_key=credential.access_key,
            secret_ciphertext=credential.secret_ciphertext,
            revoked_at=credential.revoked_at,
        )
        insert_or_conflict(
            self._connection, statement, "the credential clashes with an existing one"
        )

    def _one_credential(self, condition: ColumnElement[bool]) -> Credential | None:
        query = select(tables.credentials).where(condition)
        row = self._connection.execute(query).mappings().first()
        return None if row is None else _credential_from_row(row)

    def credential_by_token_hash(self, token_sha256: str) -> Credential | None:
        return self._one_credential(tables.credentials.c.token_sha256 == token_sha256)

    def credential_by_access_key(self, access_key: str) -> Credential | None:
        return self._one_credential(tables.credentials.c.access_key == access_key)

    def credential(self, credential_id: str) -> Credential | None:
        return self._one_credential(tables.credentials.c.id == credential_id)

    def credentials(self, project_id: str | None = None) -> builtins.list[Credential]:
        c = tables.credentials.c
        query = select(tables.credentials).order_by(c.created_at, c.id)
        if project_id is not None:
            query = query.where(c.project_id == project_id)
        return [_credential_from_row(row) for row in self._connection.execute(query).mappings()]

    def revoke_credential(self, credential_id: str, at: datetime) -> bool:
        c = tables.credentials.c
        result = self._connection.execute(
            update(tables.credentials)
            .where(c.id == credential_id, c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        return result.rowcount == 1

    def reseal_credential_secrets(self, reseal: Callable[[bytes], bytes]) -> int:
        c = tables.credentials.c
        rows = self._connection.execute(
            select(c.id, c.secret_ciphertext).where(c.secret_ciphertext.is_not(None))
        ).all()
        for credential_id, ciphertext in rows:
            self._connection.execute(
                update(tables.credentials)
                .where(c.id == credential_id)
                .values(secret_ciphertext=reseal(bytes(ciphertext)))
            )
        return len(rows)

    def set_anonymous_pull(self, project_id: str, allowed: bool) -> bool:
        c = tables.projects.c
        result = self._connection.execute(
            update(tables.projects).where(c.id == project_id).values(anonymous_pull=allowed)
        )
        return result.rowcount == 1

    def anonymous_pull_projects(self) -> builtins.list[str]:
        c = tables.projects.c
        query = select(c.id).where(c.anonymous_pull.is_(True)).order_by(c.id)
        return list(self._connection.execute(query).scalars())

    def set_stored_bytes_quota(self, project_id: str, quota: int | None) -> bool:
        c = tables.projects.c
        result = self._connection.execute(
            update(tables.projects).where(c.id == project_id).values(stored_bytes_quota=quota)
        )
        return result.rowcount == 1

    def stored_bytes_quota(self, project_id: str) -> int | None:
        c = tables.projects.c
        query = select(c.stored_bytes_quota).where(c.id == project_id)
        quota = self._connection.execute(query).scalar()
        return None if quota is None else int(quota)

    def project_summaries(self, now: datetime) -> builtins.list[ProjectSummary]:
        projects, credentials, caches = tables.projects.c, tables.credentials.c, tables.caches.c
        usable = and_(
            credentials.revoked_at.is_(None),
            or_(credentials.expires_at.is_(None), credentials.expires_at > now),
        )
        issued = (
            select(
                credentials.project_id,
                func.count().label("issued"),
                func.sum(case((usable, 1), else_=0)).label("usable"),
            )
            .group_by(credentials.project_id)
            .subquery()
        )
        held = (
            select(caches.project_id, func.count().label("caches"))
            .group_by(caches.project_id)
            .subquery()
        )
        query = (
            select(
                tables.projects,
                func.coalesce(issued.c.issued, 0).label("issued"),
                func.coalesce(issued.c.usable, 0).label("usable"),
                func.coalesce(held.c.caches, 0).label("caches"),
            )
            .outerjoin(issued, issued.c.project_id == projects.id)
            .outerjoin(held, held.c.project_id == projects.id)
            .order_by(projects.name)
        )
        return [
            ProjectSummary(
                project=_project_from_row(row),
                anonymous_pull=bool(row["anonymous_pull"]),
                credentials=int(row["issued"]),
                usable_credentials=int(row["usable"]),
                caches=int(row["caches"]),
            )
            for row in self._connection.execute(query).mappings()
        ]


def _credential_from_row(row: RowMapping) -> Credential:
    ciphertext = row["secret_ciphertext"]
    return Credential(
        id=row["id"],
        project_id=row["project_id"],
        role=Role(row["role"]),
        token_sha256=row["token_sha256"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        kind=CredentialKind(row["kind"]),
        access_key=row["access_key"],
        secret_ciphertext=None if ciphertext is None else bytes(ciphertext),
        revoked_at=row["revoked_at"],
    )


class SqlAuditRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, event: AuditEvent) -> None:
        self._connection.execute(tables.audit_events.insert().values(**asdict(event)))

    def recent(self, project_id: str | None = None, limit: int = 100) -> builtins.list[AuditEvent]:
        c = tables.audit_events.c
        query = select(tables.audit_events).order_by(c.at.desc(), c.id.desc()).limit(limit)
        if project_id is not None:
            query = query.where(c.project_id == project_id)
        return [
            AuditEvent(**{key: row[key] for key in _AUDIT_FIELDS})
            for row in self._connection.execute(query).mappings()
        ]

    def search(self, query: AuditQuery) -> builtins.list[AuditEvent]:
        c = tables.audit_events.c
        statement = (
            select(tables.audit_events).order_by(c.at.desc(), c.id.desc()).limit(query.limit)
        )
        if query.project_id is not None:
            statement = statement.where(c.project_id == query.project_id)
        if query.action:
            statement = statement.where(
                func.lower(c.action).contains(query.action.lower(), autoescape=True)
            )
        if query.refused is True:
            statement = statement.where(c.status >= REFUSED_STATUS)
        elif query.refused is False:
            statement = statement.where(c.status < REFUSED_STATUS)
        return [
            AuditEvent(**{key: row[key] for key in _AUDIT_FIELDS})
            for row in self._connection.execute(statement).mappings()
        ]


_AUDIT_FIELDS = tuple(AuditEvent.__dataclass_fields__)


def _secret_from_row(row: RowMapping) -> StoredSecret:
    return StoredSecret(
        project_id=row["project_id"],
        namespace=row["namespace"],
        name=row["name"],
        type=row["type"],
        ciphertext=bytes(row["ciphertext"]),
        created_at=row["created_at"],
    )


class SqlSecretRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def put(self, secret: StoredSecret) -> None:
        values = {
            "project_id": secret.project_id,
            "namespace": secret.namespace,
            "name": secret.name,
            "type": secret.type,
            "ciphertext": secret.ciphertext,
            "created_at": secret.created_at,
        }
        insert = upsert(self._connection, tables.secrets).values(values)
        statement = insert.on_conflict_do_update(
            index_elements=["project_id", "namespace", "name"],
            set_={
                "type": insert.excluded.type,
                "ciphertext": insert.excluded.ciphertext,
                "created_at": insert.excluded.created_at,
            },
        )
        self._connection.execute(statement)

    def get(self, project_id: str, namespace: str, name: str) -> StoredSecret | None:
        c = tables.secrets.c
        query = select(tables.secrets).where(
            c.project_id == project_id, c.namespace == namespace, c.name == name
        )
        row = self._connection.execute(query).mappings().first()
        return None if row is None else _secret_from_row(row)

    def list(self, project_id: str, namespace: str | None = None) -> builtins.list[StoredSecret]:
        c = tables.secrets.c
        query = select(tables.secrets).where(c.project_id == project_id)
        if namespace is not None:
            query = query.where(c.namespace == namespace)
        rows = self._connection.execute(query.order_by(c.namespace, c.name)).mappings()
        return [_secret_from_row(row) for row in rows]

    def delete(self, project_id: str, namespace: str, name: str) -> bool:
        c = tables.secrets.c
        result = self._connection.execute(
            delete(tables.secrets).where(
                c.project_id == project_id, c.namespace == namespace, c.name == name
            )
        )
        return result.rowcount == 1

    def reseal_all(self, reseal: Callable[[bytes], bytes]) -> int:
        c = tables.secrets.c
        rows = self._connection.execute(
            select(c.project_id, c.namespace, c.name, c.ciphertext)
        ).all()
        for project_id, namespace, name, ciphertext in rows:
            self._connection.execute(
                update(tables.secrets)
                .where(c.project_id == project_id, c.namespace == namespace, c.name == name)
                .values(ciphertext=reseal(bytes(ciphertext)))
            )
        return len(rows)


class SqlConsoleSessionRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, session: ConsoleSession) -> None:
        self._connection.execute(tables.console_sessions.insert().values(**asdict(session)))

    def get(self, id_sha256: str) -> ConsoleSession | None:
        c = tables.console_sessions.c
        row = (
            self._connection.execute(
                select(tables.console_sessions).where(c.id_sha256 == id_sha256)
            )
            .mappings()
            .first()
        )
        return None if row is None else ConsoleSession(**{key: row[key] for key in _SESSION_FIELDS})

    def revoke(self, id_sha256: str, at: datetime) -> bool:
        c = tables.console_sessions.c
        result = self._connection.execute(
            update(tables.console_sessions)
            .where(c.id_sha256 == id_sha256, c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        return result.rowcount == 1

    def forget_expired(self, before: datetime) -> int:
        c = tables.console_sessions.c
        result = self._connection.execute(
            delete(tables.console_sessions).where(or_(c.expires_at < before, c.revoked_at < before))
        )
        return int(result.rowcount)


_SESSION_FIELDS = tuple(ConsoleSession.__dataclass_fields__)


# --- store --------------------------------------------------------------------------------


class SqlUnitOfWork:
    """The repositories of one transaction, all sharing its connection."""

    caches: CacheRepository
    blob_refs: BlobRefRepository
    identity: IdentityRepository
    secrets: SecretRepository
    audit: AuditRepository
    vm_images: VmImageRepository
    console_sessions: ConsoleSessionRepository
    blob_locks: BlobLockRepository
    blob_orphans: BlobOrphanRepository
    blob_fetches: BlobFetchRepository
    heartbeats: HeartbeatRepository
    key_checks: KeyCheckRepository
    upstreams: UpstreamRepository

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.audit = SqlAuditRepository(connection)
        self.caches = SqlCacheRepository(connection)
        self.blob_refs = SqlBlobRefRepository(connection)
        self.vm_images = SqlVmImageRepository(connection)
        self.identity = SqlIdentityRepository(connection)
        self.secrets = SqlSecretRepository(connection)
        self.console_sessions = SqlConsoleSessionRepository(connection)
        self.blob_locks = SqlBlobLockRepository(connection)
        self.blob_orphans = SqlBlobOrphanRepository(connection)
        self.blob_fetches = SqlBlobFetchRepository(connection)
        self.heartbeats = SqlHeartbeatRepository(connection)
        self.key_checks = SqlKeyCheckRepository(connection)
        self.upstreams = SqlUpstreamRepository(connection)


class SqlMetadataStore:
    """MetadataStore on SQLite (`sqlite:///path`) or PostgreSQL (`postgresql://…`).

    Opening it upgrades the schema unless `upgrade=False`.
    """

    def __init__(self, url: str, *, upgrade: bool = True) -> None:
        self.url = database_url(url)
        self.engine = create_engine_for(self.url)
        self._sqlite = self.engine.dialect.name == "sqlite"
        # A shared in-memory SQLite connection cannot hold two transactions at once.
        self._serial: AbstractContextManager[Any] = (
            threading.RLock() if self._sqlite and _sqlite_in_memory(self.url) else nullcontext()
        )
        try:
            if upgrade:
                upgrade_schema(self.engine)
        except BaseException:
            self.engine.dispose()
            raise

    @contextmanager
    def transaction(self, *, read_only: bool = False) -> Iterator[SqlUnitOfWork]:
        """A unit of work; `read_only` lets SQLite readers run beside a writer (WAL). A
        database that cannot be reached (restarting, a cut connection, SQLite busy past its
        timeout) is StoreUnavailable: nothing was committed, the caller may try again."""
        try:
            with self._unit_of_work(read_only) as uow:
                yield uow
        except (OperationalError, InterfaceError) as error:
            raise StoreUnavailable(_first_line(error)) from error
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
            raise StoreUnavailable(_first_line(error)) from error

    @contextmanager
    def _unit_of_work(self, read_only: bool) -> Iterator[SqlUnitOfWork]:
        with self._serial, self.engine.connect() as connection:
            options: dict[str, Any] = {}
            if read_only:
                if self._sqlite:
                    options[_SQLITE_BEGIN_OPTION] = "deferred"
                else:
                    # One snapshot for the whole read: a list and the revision it is at agree.
                    options["postgresql_readonly"] = True
                    options["isolation_level"] = "REPEATABLE READ"
            if options:
                connection.execution_options(**options)
            with connection.begin():
                yield SqlUnitOfWork(connection)

    def schema_mismatch(self) -> str | None:
        """Why this process's schema is not the database's (another replica upgraded it, or
        it was never migrated); None when they agree."""
        with self.engine.connect() as connection:
            found = schema_revision(connection)
        if found == SCHEMA_HEAD:
            return None
        return f"the database schema is at {found or 'nothing'}, this process knows {SCHEMA_HEAD}"

    def close(self) -> None:
        self.engine.dispose()


def _first_line(error: Exception) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return (
        f"the database is not answering: {text.splitlines()[0] if text else type(error).__name__}"
    )


if TYPE_CHECKING:
    _conforms: type[MetadataStore] = SqlMetadataStore
