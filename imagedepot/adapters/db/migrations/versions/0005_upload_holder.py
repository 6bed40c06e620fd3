"""Who is uploading an image's data, so that an upload cut short by a crash can be undone.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("vm_images") as batch:
        batch.add_column(sa.Column("upload_holder", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vm_images") as batch:
        batch.drop_column("upload_holder")
