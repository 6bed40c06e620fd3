"""Alembic environment for the metadata schema.

`SqlMetadataStore` runs it in-process and hands over its own connection (already inside a
transaction), so no alembic.ini is needed at runtime. Run by the alembic CLI instead (to write
a new revision), it builds an engine from `sqlalchemy.url` the same way the store does.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from imagedepot.adapters.db.tables import metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        # SQLite can only alter tables by copying them; let future revisions use batch mode.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    given = context.config.attributes.get("connection")
    if isinstance(given, Connection):
        _configure(given)
        return
    from imagedepot.adapters.db.store import create_engine_for

    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set sqlalchemy.url (or pass a connection) to run migrations")
    engine = create_engine_for(url)
    try:
        with engine.begin() as connection:
            _configure(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    _run_offline()
else:
    _run_online()
