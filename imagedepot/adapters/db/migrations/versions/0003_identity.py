"""Identity and access: access key credentials, revocation, and the audit log.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    # batch mode: SQLite cannot alter a column in place, so Alembic copies the table.
    with op.batch_alter_table("credentials") as batch:
        batch.alter_column("token_sha256", existing_type=sa.String(64), nullable=True)
        batch.add_column(sa.Column("kind", sa.String(8), nullable=False, server_default="token"))
        batch.add_column(sa.Column("access_key", sa.String(32), nullable=True))
        batch.add_column(sa.Column("secret_ciphertext", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_credentials_access_key", ["access_key"], unique=True)

    op.create_table(
        "audit_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("credential_id", sa.String(64), nullable=True),
        sa.Column("project_id", sa.String(64), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("remote", sa.String(64), nullable=True),
    )
    op.create_index("ix_audit_events_project_id_at", "audit_events", ["project_id", "at"])
    op.create_index("ix_audit_events_at", "audit_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_at", table_name="audit_events")
    op.drop_index("ix_audit_events_project_id_at", table_name="audit_events")
    op.drop_table("audit_events")
    with op.batch_alter_table("credentials") as batch:
        batch.drop_index("ix_credentials_access_key")
        batch.drop_column("revoked_at")
        batch.drop_column("secret_ciphertext")
        batch.drop_column("access_key")
        batch.drop_column("kind")
        batch.alter_column("token_sha256", existing_type=sa.String(64), nullable=False)
