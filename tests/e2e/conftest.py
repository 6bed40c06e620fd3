"""Peers shared by the end-to-end tests: one anonymous docker-registry, one private one, and a
running imagedepot, each started once per module on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.registry import RegistryServer
from tests.support.service import ADMIN_TOKEN, Service

PRIVATE_USER, PRIVATE_PASSWORD = "builder", "s3cret-Pa55word"


@pytest.fixture(scope="module")
def registry() -> Iterator[RegistryServer]:
    with RegistryServer() as server:
        yield server


@pytest.fixture(scope="module")
def private_registry() -> Iterator[RegistryServer]:
    with RegistryServer(users={PRIVATE_USER: PRIVATE_PASSWORD}) as server:
        yield server


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with Service() as running:
        yield running


@pytest.fixture(scope="module")
def admin_token() -> str:
    return ADMIN_TOKEN
