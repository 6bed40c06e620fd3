"""The metadata schema as SQLAlchemy Core tables, shared by SQLite and PostgreSQL.

The store queries through these objects; the Alembic migrations create the same shape, and a
contract test compares the two so they cannot drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    func,
    literal_column,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    SQLite keeps no zone, so values are stored as naive UTC text (which also makes its string
    comparisons agree with time order); PostgreSQL stores timestamptz.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value!r}: the store only accepts timezone-aware times"
            )
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _json() -> TypeEngine[Any]:
    return JSON().with_variant(JSONB(), "postgresql")


metadata = MetaData()

projects = Table(
    "projects",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("anonymous_pull", Boolean(), nullable=False, server_default=false()),
    Column("stored_bytes_quota", BigInteger()),
    UniqueConstraint("name", name="uq_projects_name"),
)

credentials = Table(
    "credentials",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "project_id",
        String(64),
        ForeignKey("projects.id", name="fk_credentials_project_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("role", String(16), nullable=False),
    Column("token_sha256", String(64), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("kind", String(8), nullable=False, server_default="token"),
    Column("access_key", String(32), nullable=True),
    Column("secret_ciphertext", LargeBinary(), nullable=True),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Index("ix_credentials_project_id", "project_id"),
    Index("ix_credentials_token_sha256", "token_sha256", unique=True),
    Index("ix_credentials_access_key", "access_key", unique=True),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", UTCDateTime(), nullable=False),
    Column("credential_id", String(64), nullable=True),
    Column("project_id", String(64), nullable=True),
    Column("action", String(64), nullable=False),
    Column("target", String(512), nullable=False),
    Column("status", Integer(), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("remote", String(64), nullable=True),
    Index("ix_audit_events_project_id_at", "project_id", "at"),
    Index("ix_audit_events_at", "at"),
)

console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id_sha256", String(64), primary_key=True),
    Column("credential_id", String(64), nullable=False),
    Column("project_id", String(64), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Index("ix_console_sessions_expires_at", "expires_at"),
)

caches = Table(
    "caches",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("spec", _json(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", String(64), nullable=True),
    Column("message", Text(), nullable=True),
    Column("images", _json(), nullable=False),
    Column("labels", _json(), nullable=False),
    Column("annotations", _json(), nullable=False),
    Column("resource_version", BigInteger(), nullable=False),
    Column("generation", Integer(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("deletion_requested_at", UTCDateTime(), nullable=True),
    Column("last_used_at", UTCDateTime(), nullable=True),
    Column("expires_at", UTCDateTime(), nullable=True),
    Column("lease_holder", String(255), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("finalizers", _json(), nullable=False, server_default="[]"),
    Column("deletion_grace_seconds", Integer(), nullable=True),
    Column("data_released", Boolean(), nullable=False, server_default=false()),
    Column("phase_since", UTCDateTime(), nullable=True),
    Column("refresh_due_at", UTCDateTime(), nullable=True),
    UniqueConstraint("project_id", "name", name="uq_caches_project_id_name"),
    # Serves both "the project's caches" and their created_at, id order without a sort.
    Index("ix_caches_project_id_created_at", "project_id", "created_at", "id"),
    Index("ix_caches_status_updated_at", "status", "updated_at"),
    Index("ix_caches_expires_at", "expires_at"),
)

counters = Table(
    "counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger(), nullable=False),
)

cache_changes = Table(
    "cache_changes",
    metadata,
    Column("revision", BigInteger(), primary_key=True, autoincrement=False),
    Column("project_id", String(64), nullable=False),
    Column("cache_id", String(64), nullable=False),
    Column("type", String(16), nullable=False),
    Column("cache", _json(), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    # A watcher's poll: one project's changes after a revision, in order.
    Index("ix_cache_changes_project_id_revision", "project_id", "revision"),
    Index("ix_cache_changes_at", "at"),
)

blob_refs = Table(
    "blob_refs",
    metadata,
    Column("owner_id", String(128), nullable=False),
    Column("digest", String(255), nullable=False),
    Column("size", BigInteger(), nullable=False),
    Column("media_type", String(255), nullable=False),
    PrimaryKeyConstraint("owner_id", "digest", name="pk_blob_refs"),
    Index("ix_blob_refs_digest", "digest"),
)

blob_orphans = Table(
    "blob_orphans",
    metadata,
    Column("digest", String(255), primary_key=True),
    Column("since", UTCDateTime(), nullable=False),
)

blob_fetches = Table(
    "blob_fetches",
    metadata,
    Column("digest", String(255), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("lease_until", UTCDateTime(), nullable=False),
)

process_heartbeats = Table(
    "process_heartbeats",
    metadata,
    Column("holder", String(255), primary_key=True),
    Column("seen_at", UTCDateTime(), nullable=False),
)

key_checks = Table(
    "key_checks",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("ciphertext", LargeBinary(), nullable=False),
)

secrets = Table(
    "secrets",
    metadata,
    Column("project_id", String(64), nullable=False),
    Column("namespace", String(253), nullable=False),
    Column("name", String(253), nullable=False),
    Column("type", String(255), nullable=False),
    Column("ciphertext", LargeBinary(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("project_id", "namespace", "name", name="pk_secrets"),
)

upstreams = Table(
    "upstreams",
    metadata,
    Column("project_id", String(64), nullable=False),
    Column("registry", String(255), nullable=False),
    Column("mirrors", _json(), nullable=False),
    Column("pull_secret", String(512)),
    Column("plain_http", Boolean(), nullable=False, server_default=false()),
    Column("insecure_skip_verify", Boolean(), nullable=False, server_default=false()),
    Column("check_mode", String(32), nullable=False),
    Column("check_max_age_seconds", BigInteger(), nullable=False, server_default="0"),
    Column("created_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("project_id", "registry", name="pk_upstreams"),
)

vm_images = Table(
    "vm_images",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("name", String(255), nullable=True),
    Column("status", String(16), nullable=False),
    Column("visibility", String(16), nullable=False),
    Column("protected", Boolean(), nullable=False),
    Column("os_hidden", Boolean(), nullable=False),
    Column("disk_format", String(16), nullable=True),
    Column("container_format", String(16), nullable=True),
    Column("min_disk", Integer(), nullable=False),
    Column("min_ram", Integer(), nullable=False),
    Column("size", BigInteger(), nullable=True),
    Column("virtual_size", BigInteger(), nullable=True),
    Column("checksum", String(32), nullable=True),
    Column("os_hash_algo", String(16), nullable=True),
    Column("os_hash_value", String(128), nullable=True),
    Column("blob_digest", String(71), nullable=True),
    Column("image_type", String(16), nullable=False),
    Column("region", String(64), nullable=True),
    Column("description", Text(), nullable=True),
    Column("version", Integer(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("deleted_at", UTCDateTime(), nullable=True),
    Column("upload_holder", String(128), nullable=True),
    # The default list order (newest first) and the common filters, without scans.
    Index("ix_vm_images_project_id_created_at", "project_id", "created_at", "id"),
    # A name filter in the default order (the common lookup) reads the index in order.
    Index("ix_vm_images_project_id_name", "project_id", "name", "created_at", "id"),
    Index("ix_vm_images_project_id_status", "project_id", "status"),
    Index("ix_vm_images_project_id_updated_at", "project_id", "updated_at"),
    Index("ix_vm_images_project_id_region", "project_id", "region"),
    # Others' public, community and shared images, for a Glance list's other sources
    # (see vmimage_store._sources): in the default order and by name filter.
    Index("ix_vm_images_visibility_created_at", "visibility", "created_at", "id"),
    # The project's own images of one visibility (`visibility=private`, `=shared`).
    Index("ix_vm_images_project_id_visibility", "project_id", "visibility", "created_at", "id"),
    Index("ix_vm_images_visibility_name", "visibility", "name", "created_at", "id"),
)
# Name order from either source, as the list sorts it (NULL folded into '' so that keyset
# markers compare exactly; the literal, not a bound '', lets the planners match the index).
for _leading in ("project_id", "visibility"):
    Index(
        f"ix_vm_images_{_leading}_name_order",
        vm_images.c[_leading],
        func.coalesce(vm_images.c.name, literal_column("''")),
        vm_images.c.id,
    )

vm_image_jobs = Table(
    "vm_image_jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("project_id", String(64), nullable=False),
    Column("region", String(64), nullable=False),
    Column("type", String(32), nullable=False),
    Column("resource_id", String(36), nullable=False),
    Column("progress", Integer(), nullable=False),
    Column("done", Boolean(), nullable=False),
    Column("success", Boolean(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("result", Text(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_vm_image_jobs_project_id_created_at", "project_id", "created_at"),
)

vm_image_tags = Table(
    "vm_image_tags",
    metadata,
    Column(
        "image_id",
        String(36),
        ForeignKey("vm_images.id", name="fk_vm_image_tags_image_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("tag", String(255), nullable=False),
    PrimaryKeyConstraint("image_id", "tag", name="pk_vm_image_tags"),
    Index("ix_vm_image_tags_tag", "tag"),
)

vm_image_properties = Table(
    "vm_image_properties",
    metadata,
    Column(
        "image_id",
        String(36),
        ForeignKey("vm_images.id", name="fk_vm_image_properties_image_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(255), nullable=False),
    Column("value", Text(), nullable=False),
    PrimaryKeyConstraint("image_id", "name", name="pk_vm_image_properties"),
    Index("ix_vm_image_properties_name", "name"),
)

vm_image_members = Table(
    "vm_image_members",
    metadata,
    Column(
        "image_id",
        String(36),
        ForeignKey("vm_images.id", name="fk_vm_image_members_image_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("member_id", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("image_id", "member_id", name="pk_vm_image_members"),
    # "Images shared with me": the list's visibility test runs per member.
    Index("ix_vm_image_members_member_id", "member_id", "status"),
)
