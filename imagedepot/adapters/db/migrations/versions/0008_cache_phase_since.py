"""When a cache's status last changed, for the Ready condition's lastTransitionTime.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22

Existing caches get none; they are read as having been in their status since creation.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("caches") as batch:
        batch.add_column(sa.Column("phase_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("caches") as batch:
        batch.drop_column("phase_since")
