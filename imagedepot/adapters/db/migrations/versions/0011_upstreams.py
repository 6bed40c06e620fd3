"""The registries each project may pull through the registry port (pull-through is opt-in per
project and per registry), with the mirrors, login and tag check policy of each; each
project's quota of stored bytes, under which its least recently pulled caches are evicted;
and when each cache with a refresh interval next has its tags re-resolved.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "upstreams",
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("registry", sa.String(255), nullable=False),
        sa.Column("mirrors", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("pull_secret", sa.String(512)),
        sa.Column("plain_http", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("insecure_skip_verify", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("check_mode", sa.String(32), nullable=False),
        sa.Column("check_max_age_seconds", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "registry", name="pk_upstreams"),
    )

    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("stored_bytes_quota", sa.BigInteger()))
    with op.batch_alter_table("caches") as batch:
        batch.add_column(sa.Column("refresh_due_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("caches") as batch:
        batch.drop_column("refresh_due_at")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("stored_bytes_quota")
    op.drop_table("upstreams")
