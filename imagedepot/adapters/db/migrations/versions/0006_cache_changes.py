"""Cache changes in one global order: a revision counter, a change log, and finalizers.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22

A watcher resumes from a revision and must see every write after it, deletions included, so
each cache write takes the next revision of one counter (serialising writers, which makes
commit order and revision order agree) and logs the cache as it was after the write. A
cache's resource_version becomes that global revision. Other parties' finalizers, kept so far
inside a dialect annotation, become a column, because they now hold a deletion back.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_EXTRA_ANNOTATION = "imagedepot.io/cci-extra"


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "cache_changes",
        sa.Column("revision", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("cache_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("cache", _json(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_cache_changes_project_id_revision", "cache_changes", ["project_id", "revision"]
    )
    op.create_index("ix_cache_changes_at", "cache_changes", ["at"])
    with op.batch_alter_table("caches") as batch:
        batch.alter_column("resource_version", existing_type=sa.Integer(), type_=sa.BigInteger())
        batch.add_column(sa.Column("finalizers", _json(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("deletion_grace_seconds", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("data_released", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    connection = op.get_bind()
    caches = sa.table(
        "caches",
        sa.column("id", sa.String()),
        sa.column("annotations", _json()),
        sa.column("finalizers", _json()),
        sa.column("resource_version", sa.BigInteger()),
    )
    for row in connection.execute(sa.select(caches.c.id, caches.c.annotations)).mappings():
        annotations = dict(row["annotations"] or {})
        try:
            extras = json.loads(annotations.get(_EXTRA_ANNOTATION) or "{}")
        except json.JSONDecodeError:
            continue
        if not isinstance(extras, dict) or not extras.get("finalizers"):
            continue
        finalizers = [name for name in extras.pop("finalizers") if isinstance(name, str)]
        if extras:
            annotations[_EXTRA_ANNOTATION] = json.dumps(extras)
        else:
            annotations.pop(_EXTRA_ANNOTATION, None)
        connection.execute(
            caches.update()
            .where(caches.c.id == row["id"])
            .values(annotations=annotations, finalizers=finalizers)
        )
    # Revisions continue above every version handed out so far; older ones are "compacted".
    newest = connection.execute(
        sa.select(sa.func.coalesce(sa.func.max(caches.c.resource_version), 0))
    ).scalar_one()
    counters = sa.table("counters", sa.column("name", sa.String()), sa.column("value"))
    connection.execute(
        counters.insert(),
        [
            {"name": "cache_revision", "value": newest},
            {"name": "cache_changes_compacted", "value": newest},
        ],
    )


def downgrade() -> None:
    with op.batch_alter_table("caches") as batch:
        batch.drop_column("data_released")
        batch.drop_column("deletion_grace_seconds")
        batch.drop_column("finalizers")
        batch.alter_column("resource_version", existing_type=sa.BigInteger(), type_=sa.Integer())
    op.drop_index("ix_cache_changes_at", "cache_changes")
    op.drop_index("ix_cache_changes_project_id_revision", "cache_changes")
    op.drop_table("cache_changes")
    op.drop_table("counters")
