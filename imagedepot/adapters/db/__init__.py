"""The SQL metadata store: one schema, run on SQLite for a single box and PostgreSQL for a fleet."""

from imagedepot.adapters.db.store import SqlMetadataStore, migrate

__all__ = ["SqlMetadataStore", "migrate"]
