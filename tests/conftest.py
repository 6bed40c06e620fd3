"""Peers more than one suite needs, each started once per session on free loopback ports: a
PostgreSQL cluster and the two real S3 engines (the contract suites and the deployment tests
on object storage share them)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.support.postgres import PostgresCluster, PostgresUnavailable, running_cluster
from tests.support.s3engines import S3Engine, require_engine, running_radosgw, running_seaweedfs


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Engine]:
    require_engine("seaweedfs")
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as engine:
        yield engine


@pytest.fixture(scope="session")
def radosgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Engine]:
    require_engine("radosgw")
    with running_radosgw(tmp_path_factory.mktemp("radosgw")) as engine:
        yield engine


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
