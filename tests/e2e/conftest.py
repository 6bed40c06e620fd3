"""Peers shared by the end-to-end tests: one anonymous docker-registry, one private one, and a
running imagedepot, each started once per module on free loopback ports; and for the
ImageSnapshot tests, a member credential with a kubernetes client and kubectl behind TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.support.browser import browser, page, phone_page  # noqa: F401 (fixtures)
from tests.support.kube import Kubectl, custom_objects, kubectl_binary
from tests.support.registry import RegistryServer
from tests.support.service import ADMIN_TOKEN, Service
from tests.support.tlsproxy import TlsProxy

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


@pytest.fixture(scope="module")
def member(service: Service) -> str:
    return service.credential("k8s-team", "member")


@pytest.fixture
def api(service: Service, member: str) -> Iterator[k8s.CustomObjectsApi]:
    yield from custom_objects(service, member)


@pytest.fixture(scope="module")
def tls_front(service: Service) -> Iterator[TlsProxy]:
    with TlsProxy(service.port) as proxy:
        yield proxy


@pytest.fixture
def kubectl(tls_front: TlsProxy, member: str, tmp_path: Path) -> Kubectl:
    binary = kubectl_binary()
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text("apiVersion: v1\nkind: Config\n")
    return Kubectl(binary, home, tls_front.url, member)
