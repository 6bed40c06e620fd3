"""`/healthz` and `/readyz` on both ports, as a load balancer asks them: a replica whose
database stops answering stays alive but is taken out of rotation."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import psycopg
import pytest

from tests.support.postgres import PostgresCluster, running_cluster
from tests.support.service import Service

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with running_cluster() as started:
        yield started


def probe(service: Service, path: str) -> list[httpx.Response]:
    urls = (service.url, f"http://127.0.0.1:{service.registry_port}")
    return [httpx.get(f"{url}{path}", timeout=10) for url in urls]


def test_readiness_follows_the_database_on_both_ports(cluster: PostgresCluster) -> None:
    database = cluster.create_database()
    with Service(env={"IMAGEDEPOT_DATABASE_URL": cluster.url(database)}) as service:
        for answer in probe(service, "/readyz"):
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"status": "ready"}
        cluster.drop_database(database)
        for answer in probe(service, "/readyz"):
            assert answer.status_code == 503, answer.text
            assert answer.json()["status"] == "unready"
            assert answer.json()["reason"].startswith("database: ")
        assert [answer.status_code for answer in probe(service, "/healthz")] == [200, 200]


def test_a_replica_behind_the_database_schema_is_not_ready(cluster: PostgresCluster) -> None:
    """Another replica, newer, upgraded the schema: this one is taken out of rotation."""
    database = cluster.create_database()
    try:
        with Service(env={"IMAGEDEPOT_DATABASE_URL": cluster.url(database)}) as service:
            with psycopg.connect(cluster.url(database), autocommit=True) as connection:
                connection.execute("UPDATE alembic_version SET version_num = '9999'")
            for answer in probe(service, "/readyz"):
                assert answer.status_code == 503, answer.text
                assert "schema is at 9999" in answer.json()["reason"]
            assert [answer.status_code for answer in probe(service, "/healthz")] == [200, 200]
    finally:
        cluster.drop_database(database)
