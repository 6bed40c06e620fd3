"""What processes on several machines coordinate through the database rather than a local
disk: blob reuse against garbage collection, the collector's grace clock, one fetch per blob
across every worker, heartbeats, and a value sealed with the secret key.

On PostgreSQL the reuse/removal exclusion is a transaction-scoped advisory lock per digest
(shared for builders, exclusive and never waited for by collectors). On SQLite every write
transaction already holds the database's write lock (BEGIN IMMEDIATE), across threads and
processes alike, so the locks are that and nothing more is needed.
"""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from sqlalchemy import Connection, delete, false, or_, select, text, update

from imagedepot.adapters.db import tables
from imagedepot.adapters.db.statements import chunks, upsert

# The first key of every advisory lock imagedepot takes, so that its locks never meet those of
# another application sharing the database.
_LOCK_NAMESPACE: Final = 0x1D_B10B


def _lock_key(digest: str) -> int:
    """A digest as the second key of an advisory lock: 32 bits of its hash (a collision only
    makes two blobs wait for each other)."""
    return int.from_bytes(hashlib.sha256(digest.encode()).digest()[:4], "big", signed=True)


class SqlBlobLockRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._postgres = connection.dialect.name == "postgresql"

    def hold_for_reuse(self, digests: Sequence[str]) -> None:
        if not self._postgres:
            return
        # Sorted and unique: two builders never hold shared locks in crossing orders while a
        # collector waits between them (shared locks do not block each other anyway).
        for key in sorted({_lock_key(digest) for digest in digests}):
            self._connection.execute(
                text("SELECT pg_advisory_xact_lock_shared(:namespace, :key)"),
                {"namespace": _LOCK_NAMESPACE, "key": key},
            )

    def hold_for_removal(self, digest: str) -> bool:
        if not self._postgres:
            return True
        taken = self._connection.execute(
            text("SELECT pg_try_advisory_xact_lock(:namespace, :key)"),
            {"namespace": _LOCK_NAMESPACE, "key": _lock_key(digest)},
        ).scalar()
        return bool(taken)


class SqlBlobOrphanRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def note(self, digests: Sequence[str], now: datetime) -> None:
        statement = upsert(self._connection, tables.blob_orphans).on_conflict_do_nothing(
            index_elements=["digest"]
        )
        for batch in chunks(list(dict.fromkeys(digests))):
            self._connection.execute(statement, [{"digest": d, "since": now} for d in batch])

    def forget(self, digests: Sequence[str]) -> None:
        c = tables.blob_orphans.c
        for batch in chunks(list(dict.fromkeys(digests))):
            self._connection.execute(delete(tables.blob_orphans).where(c.digest.in_(batch)))

    def noted(self) -> set[str]:
        return set(self._connection.execute(select(tables.blob_orphans.c.digest)).scalars())

    def due(self, cutoff: datetime) -> builtins.list[str]:
        c = tables.blob_orphans.c
        rows = self._connection.execute(
            select(c.digest).where(c.since <= cutoff).order_by(c.since, c.digest)
        )
        return list(rows.scalars())


class SqlBlobFetchRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def claim(
        self,
        digest: str,
        holder: str,
        now: datetime,
        lease_until: datetime,
        dead_holders: Sequence[str] = (),
    ) -> str:
        c = tables.blob_fetches.c
        inserted = self._connection.execute(
            upsert(self._connection, tables.blob_fetches)
            .values(digest=digest, holder=holder, lease_until=lease_until)
            .on_conflict_do_nothing(index_elements=["digest"])
        )
        if inserted.rowcount == 1:
            return holder
        free = or_(
            c.holder == holder,
            c.lease_until < now,
            c.holder.in_(list(dead_holders)) if dead_holders else false(),
        )
        self._connection.execute(
            update(tables.blob_fetches)
            .where(c.digest == digest, free)
            .values(holder=holder, lease_until=lease_until)
        )
        current = self._connection.execute(select(c.holder).where(c.digest == digest)).scalar()
        return current if current is not None else holder

    def renew(self, digest: str, holder: str, lease_until: datetime) -> bool:
        c = tables.blob_fetches.c
        result = self._connection.execute(
            update(tables.blob_fetches)
            .where(c.digest == digest, c.holder == holder)
            .values(lease_until=lease_until)
        )
        return result.rowcount == 1

    def release(self, digest: str, holder: str) -> None:
        c = tables.blob_fetches.c
        self._connection.execute(
            delete(tables.blob_fetches).where(c.digest == digest, c.holder == holder)
        )

    def holders(self) -> builtins.list[str]:
        c = tables.blob_fetches.c
        return list(self._connection.execute(select(c.holder).distinct()).scalars())


class SqlHeartbeatRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def beat(self, holder: str, now: datetime) -> None:
        statement = upsert(self._connection, tables.process_heartbeats).values(
            holder=holder, seen_at=now
        )
        self._connection.execute(
            statement.on_conflict_do_update(index_elements=["holder"], set_={"seen_at": now})
        )

    def silent(self, holders: Sequence[str], since: datetime) -> builtins.list[str]:
        wanted = list(dict.fromkeys(holders))
        c = tables.process_heartbeats.c
        alive: set[str] = set()
        for batch in chunks(wanted):
            alive.update(
                self._connection.execute(
                    select(c.holder).where(c.holder.in_(batch), c.seen_at >= since)
                ).scalars()
            )
        return [holder for holder in wanted if holder not in alive]

    def forget_silent(self, before: datetime) -> int:
        c = tables.process_heartbeats.c
        result = self._connection.execute(
            delete(tables.process_heartbeats).where(c.seen_at < before)
        )
        return int(result.rowcount or 0)


class SqlKeyCheckRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def sealed(self, name: str) -> bytes | None:
        c = tables.key_checks.c
        found = self._connection.execute(select(c.ciphertext).where(c.name == name)).scalar()
        return None if found is None else bytes(found)

    def put(self, name: str, ciphertext: bytes) -> None:
        statement = upsert(self._connection, tables.key_checks).values(
            name=name, ciphertext=ciphertext
        )
        self._connection.execute(
            statement.on_conflict_do_update(
                index_elements=["name"], set_={"ciphertext": ciphertext}
            )
        )

    def add_if_absent(self, name: str, ciphertext: bytes) -> bytes:
        statement = upsert(self._connection, tables.key_checks).values(
            name=name, ciphertext=ciphertext
        )
        self._connection.execute(statement.on_conflict_do_nothing(index_elements=["name"]))
        stored = self.sealed(name)
        assert stored is not None
        return stored
