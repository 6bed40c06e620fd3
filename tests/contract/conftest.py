"""Fixtures for contract suites that run one set of tests against every backend of a port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from imagedepot.adapters.db.store import SqlMetadataStore
from tests.support.postgres import PostgresCluster, PostgresUnavailable, running_cluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster for the session; skipped without PostgreSQL, failed under CI=true."""
    with ExitStack() as stack:
        try:
            cluster = stack.enter_context(running_cluster())
        except PostgresUnavailable as error:
            if os.environ.get("CI", "").lower() == "true":
                raise
            pytest.skip(str(error))
        yield cluster


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
