"""Indexes for each source of a Glance image list: public, community and shared images by
visibility (in the default order and by name filter), a project's own by visibility, and
name order from either source. A list used to select its images with one OR of owner, visibility and
membership, which no index serves, so every page scanned and sorted the whole table.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_NAME_ORDER = sa.text("coalesce(name, '')")


def upgrade() -> None:
    op.create_index(
        "ix_vm_images_visibility_created_at", "vm_images", ["visibility", "created_at", "id"]
    )
    op.create_index(
        "ix_vm_images_visibility_name", "vm_images", ["visibility", "name", "created_at", "id"]
    )
    op.create_index(
        "ix_vm_images_project_id_visibility",
        "vm_images",
        ["project_id", "visibility", "created_at", "id"],
    )
    for leading in ("project_id", "visibility"):
        op.create_index(
            f"ix_vm_images_{leading}_name_order", "vm_images", [leading, _NAME_ORDER, "id"]
        )


def downgrade() -> None:
    for leading in ("visibility", "project_id"):
        op.drop_index(f"ix_vm_images_{leading}_name_order", "vm_images")
    op.drop_index("ix_vm_images_project_id_visibility", "vm_images")
    op.drop_index("ix_vm_images_visibility_name", "vm_images")
    op.drop_index("ix_vm_images_visibility_created_at", "vm_images")
