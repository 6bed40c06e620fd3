"""Initial schema: projects, credentials, caches, blob references and secrets.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Spelled out rather than imported from tables.py, so that this revision keeps creating the
schema as it was when it was written.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _time(name: str, *, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        _time("created_at"),
        sa.UniqueConstraint("name", name="uq_projects_name"),
    )
    op.create_table(
        "credentials",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "project_id",
            sa.String(64),
            sa.ForeignKey("projects.id", name="fk_credentials_project_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        _time("created_at"),
        _time("expires_at", nullable=True),
    )
    op.create_index("ix_credentials_project_id", "credentials", ["project_id"])
    op.create_index("ix_credentials_token_sha256", "credentials", ["token_sha256"], unique=True)

    op.create_table(
        "caches",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("spec", _json(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("images", _json(), nullable=False),
        sa.Column("labels", _json(), nullable=False),
        sa.Column("annotations", _json(), nullable=False),
        sa.Column("resource_version", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        _time("deletion_requested_at", nullable=True),
        _time("last_used_at", nullable=True),
        _time("expires_at", nullable=True),
        sa.Column("lease_holder", sa.String(255), nullable=True),
        _time("lease_until", nullable=True),
        sa.UniqueConstraint("project_id", "name", name="uq_caches_project_id_name"),
    )
    op.create_index("ix_caches_project_id_created_at", "caches", ["project_id", "created_at", "id"])
    op.create_index("ix_caches_status_updated_at", "caches", ["status", "updated_at"])
    op.create_index("ix_caches_expires_at", "caches", ["expires_at"])

    op.create_table(
        "blob_refs",
        sa.Column("owner_id", sa.String(128), nullable=False),
        sa.Column("digest", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("owner_id", "digest", name="pk_blob_refs"),
    )
    op.create_index("ix_blob_refs_digest", "blob_refs", ["digest"])

    op.create_table(
        "secrets",
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("project_id", "namespace", "name", name="pk_secrets"),
    )


def downgrade() -> None:
    op.drop_table("secrets")
    op.drop_table("blob_refs")
    op.drop_table("caches")
    op.drop_table("credentials")
    op.drop_table("projects")
