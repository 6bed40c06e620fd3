"""VM images (Glance images, the seed's snapshots, DiDi custom images), their tags and properties.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "vm_images",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),
        sa.Column("protected", sa.Boolean(), nullable=False),
        sa.Column("os_hidden", sa.Boolean(), nullable=False),
        sa.Column("disk_format", sa.String(16), nullable=True),
        sa.Column("container_format", sa.String(16), nullable=True),
        sa.Column("min_disk", sa.Integer(), nullable=False),
        sa.Column("min_ram", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("virtual_size", sa.BigInteger(), nullable=True),
        sa.Column("checksum", sa.String(32), nullable=True),
        sa.Column("os_hash_algo", sa.String(16), nullable=True),
        sa.Column("os_hash_value", sa.String(128), nullable=True),
        sa.Column("blob_digest", sa.String(71), nullable=True),
        sa.Column("image_type", sa.String(16), nullable=False),
        sa.Column("region", sa.String(64), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(
        "ix_vm_images_project_id_created_at", "vm_images", ["project_id", "created_at", "id"]
    )
    op.create_index(
        "ix_vm_images_project_id_name", "vm_images", ["project_id", "name", "created_at", "id"]
    )
    op.create_index("ix_vm_images_project_id_status", "vm_images", ["project_id", "status"])
    op.create_index("ix_vm_images_project_id_updated_at", "vm_images", ["project_id", "updated_at"])
    op.create_index("ix_vm_images_project_id_region", "vm_images", ["project_id", "region"])
    op.create_table(
        "vm_image_jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("resource_id", sa.String(36), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_vm_image_jobs_project_id_created_at", "vm_image_jobs", ["project_id", "created_at"]
    )
    op.create_table(
        "vm_image_tags",
        sa.Column("image_id", sa.String(36), nullable=False),
        sa.Column("tag", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("image_id", "tag", name="pk_vm_image_tags"),
        sa.ForeignKeyConstraint(
            ["image_id"], ["vm_images.id"], name="fk_vm_image_tags_image_id", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_vm_image_tags_tag", "vm_image_tags", ["tag"])
    op.create_table(
        "vm_image_properties",
        sa.Column("image_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("image_id", "name", name="pk_vm_image_properties"),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["vm_images.id"],
            name="fk_vm_image_properties_image_id",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_vm_image_properties_name", "vm_image_properties", ["name"])


def downgrade() -> None:
    op.drop_index("ix_vm_image_properties_name", table_name="vm_image_properties")
    op.drop_table("vm_image_properties")
    op.drop_index("ix_vm_image_tags_tag", table_name="vm_image_tags")
    op.drop_table("vm_image_tags")
    op.drop_index("ix_vm_image_jobs_project_id_created_at", table_name="vm_image_jobs")
    op.drop_table("vm_image_jobs")
    for index in ("region", "updated_at", "status", "name", "created_at"):
        op.drop_index(f"ix_vm_images_project_id_{index}", table_name="vm_images")
    op.drop_table("vm_images")
