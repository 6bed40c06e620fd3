"""Registry port: projects can allow anonymous pulls of their caches.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-15

The registry port serves a node mirror without credentials only for projects that opted in,
so the flag is stored with the project and is off for every existing one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.add_column(
        "projects",
        sa.Column("anonymous_pull", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("anonymous_pull")
