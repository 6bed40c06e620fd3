"""Fixtures for contract suites that run one set of tests against every backend of a port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imagedepot.adapters.db.store import SqlMetadataStore
from tests.support.postgres import PostgresCluster


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def metadata_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a fresh SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        # A directory that does not exist yet: the store creates it.
        yield f"sqlite:///{tmp_path / 'metadata' / 'imagedepot.db'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    name = cluster.create_database()
    try:
        yield cluster.url(name)
    finally:
        cluster.drop_database(name)


@pytest.fixture
def store(metadata_url: str) -> Iterator[SqlMetadataStore]:
    """A store opened (and migrated) on the empty database of `metadata_url`."""
    opened = SqlMetadataStore(metadata_url)
    try:
        yield opened
    finally:
        opened.close()
