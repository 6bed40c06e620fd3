"""VM image members: the projects a shared image is offered to, and whether they accepted.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "vm_image_members",
        sa.Column(
            "image_id",
            sa.String(36),
            sa.ForeignKey("vm_images.id", name="fk_vm_image_members_image_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("member_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("image_id", "member_id", name="pk_vm_image_members"),
    )
    op.create_index("ix_vm_image_members_member_id", "vm_image_members", ["member_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_vm_image_members_member_id", "vm_image_members")
    op.drop_table("vm_image_members")
