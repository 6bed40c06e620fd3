"""Peers more than one suite needs: the two real S3 engines, each started once per session on
free loopback ports (the blob contract suite and the S3 deployment tests share them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
