"""What several machines coordinate through the database instead of a local disk: when each
unreferenced blob was first seen unreferenced (the collector's grace clock), which process is
fetching which blob (one download per blob across the deployment), when each process was last
seen alive (liveness across hosts, where a pid check cannot reach), and a value sealed with
the secret key (a replica started with another key is refused).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "blob_orphans",
        sa.Column("digest", sa.String(255), primary_key=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "blob_fetches",
        sa.Column("digest", sa.String(255), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "process_heartbeats",
        sa.Column("holder", sa.String(255), primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "key_checks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("key_checks")
    op.drop_table("process_heartbeats")
    op.drop_table("blob_fetches")
    op.drop_table("blob_orphans")
