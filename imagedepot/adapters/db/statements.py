"""Statement helpers every SQL repository shares: inserts that report a taken key as a
Conflict, the dialect's upsert, versioned updates, and chunked IN lists. Kept here so the repositories of each
noun (caches, VM images, the rest in `store.py`) use one spelling of each.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

from sqlalchemy import Column, Connection, Executable, Table, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from imagedepot.domain.errors import Conflict

IN_CHUNK: Final = 500
"""Values per IN list: well under SQLite's bound-parameter limit."""


def chunks(items: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), IN_CHUNK):
        yield list(items[start : start + IN_CHUNK])


def upsert(connection: Connection, table: Any) -> Any:
    """The dialect's INSERT, which has ON CONFLICT support."""
    if connection.dialect.name == "postgresql":
        return postgresql_insert(table)
    return sqlite_insert(table)


def insert_or_conflict(
    connection: Connection, statement: Executable, message: str, field: str | None = None
) -> None:
    """Run an INSERT; a taken key becomes Conflict(message, field)."""
    # A failed INSERT aborts a whole PostgreSQL transaction; inside a savepoint only the
    # savepoint is lost and the caller's unit of work stays usable.
    try:
        with connection.begin_nested():
            connection.execute(statement)
    except IntegrityError:
        raise Conflict(message, field=field) from None


def update_if_version(
    connection: Connection,
    table: Table,
    row_id: str,
    version: Column[Any],
    expected: int,
    values: dict[str, Any],
) -> bool:
    """Optimistic concurrency: write `values` to the row `row_id` only if its `version`
    column still holds `expected`; False (nothing written) when another writer was first
    or the row is gone."""
    result = connection.execute(
        update(table).where(table.c.id == row_id, version == expected).values(values)
    )
    return result.rowcount == 1
