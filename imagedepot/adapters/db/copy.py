"""Moving a whole metadata store to another database (SQLite to PostgreSQL, when a single
machine becomes several): every table copied row for row in dependency order, in one
transaction on the target, which must hold no one's data yet. What only a running process
means (fetch claims, heartbeats) is left behind.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import delete, func, insert, select

from imagedepot.adapters.db import tables
from imagedepot.adapters.db.store import SqlMetadataStore

BATCH: Final = 1000
_EPHEMERAL: Final = frozenset({"blob_fetches", "process_heartbeats"})
_USER_DATA: Final = (tables.projects, tables.caches, tables.vm_images, tables.secrets)
"""A target holding any of these is someone's store: never overwritten."""


class TargetNotEmpty(Exception):
    """The target database already holds data; nothing was copied."""


def copy_database(source: SqlMetadataStore, target: SqlMetadataStore) -> dict[str, int]:
    """Copy every row of `source` into the empty `target` (both migrated); rows per table."""
    copied: dict[str, int] = {}
    kept = [table for table in tables.metadata.sorted_tables if table.name not in _EPHEMERAL]
    with source.engine.connect() as reading, target.engine.begin() as writing:
        for table in _USER_DATA:
            if writing.execute(select(func.count()).select_from(table)).scalar():
                raise TargetNotEmpty(f"the target database already holds {table.name}")
        for table in reversed(kept):  # what migrations seeded (counters) gives way to the source
            writing.execute(delete(table))
        for table in kept:
            count = 0
            rows = reading.execution_options(yield_per=BATCH).execute(select(table))
            for batch in rows.mappings().partitions(BATCH):
                writing.execute(insert(table), [dict(row) for row in batch])
                count += len(batch)
            copied[table.name] = count
        if writing.dialect.name == "postgresql":
            # Rows came with their ids: move each serial past the largest.
            for table in kept:
                for column in table.primary_key.columns:
                    if column.autoincrement is True:
                        sequence = func.pg_get_serial_sequence(table.name, column.name)
                        after = func.coalesce(func.max(column), 0) + 1
                        writing.execute(select(func.setval(sequence, after, False)))
    return copied
