"""Hostile input on the registry port and the 500 answer on both ports, against a real `serve`.

Page sizes that `str.isdigit()` takes but `int()` refuses, names with control characters that
would otherwise land in a `WWW-Authenticate` header, and paths no route matches must each get
the OCI error body, never a 500 or a dropped connection. An unhandled fault (the database
dropped under a running server) must answer in the dialect of its path, with the
`X-Request-Id` its log line names, and announce the close so a pooled client reconnects.
Raw sockets send what httpx would refuse to.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.postgres import PostgresCluster, running_cluster
from tests.support.service import Service

pytestmark = pytest.mark.peers


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(port: int, request: bytes) -> RawAnswer:
    """Send `request` as is and read one whole response (by Content-Length); a connection
    closed before the response is complete fails the test."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"the connection closed without a response: {received!r}"
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, f"the connection closed mid-body: {received!r}"
            body += chunk
    return RawAnswer(int(status_line.split(" ")[1]), headers, body)


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]
    return "\r\n".join(lines).encode()


def oci_code(answer: RawAnswer | httpx.Response) -> str:
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    (error,) = answer.json()["errors"]
    assert error["message"]
    code: str = error["code"]
    return code


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with Service() as running:
        yield running


@pytest.fixture(scope="module")
def registry(service: Service) -> Iterator[httpx.Client]:
    token = service.credential("hostile", "member")
    with httpx.Client(
        base_url=f"http://127.0.0.1:{service.registry_port}", auth=("puller", token), timeout=30
    ) as client:
        yield client


@pytest.mark.parametrize("path", ["/v2/_catalog", "/v2/team/app/tags/list"])
@pytest.mark.parametrize("size", ["²", "٣", "9" * 5000, "9" * 20, "-1", "1e3"])
def test_a_page_size_that_is_no_plain_number_is_refused_naming_n(
    registry: httpx.Client, path: str, size: str
) -> None:
    answer = registry.get(path, params={"n": size})
    assert answer.status_code == 400, answer.text
    assert oci_code(answer) == "PAGINATION_NUMBER_INVALID"
    assert "n must be" in answer.json()["errors"][0]["message"]
    assert len(answer.content) < 1024  # five thousand digits are not echoed back


def test_a_large_but_plain_page_size_still_pages(registry: httpx.Client) -> None:
    answer = registry.get("/v2/_catalog", params={"n": "9" * 18})
    assert answer.status_code == 200, answer.text
    assert "repositories" in answer.json()


@pytest.mark.parametrize("encoded", ["%01", "%0D", "%7F", "%C3%AB", "%00"])
@pytest.mark.parametrize("route", ["tags/list", "manifests/v1", "blobs/sha256:" + "a" * 64])
def test_a_name_with_control_characters_is_refused_before_any_challenge(
    service: Service, encoded: str, route: str
) -> None:
    answer = raw_request(
        service.registry_port,
        get(f"/v2/team{encoded}app/{route}", "Authorization: Bearer not-a-token"),
    )
    assert answer.status == 400, answer
    assert oci_code(answer) == "NAME_INVALID"
    assert "www-authenticate" not in answer.headers


def test_a_newline_in_a_name_matches_no_route_and_answers_oci_json(service: Service) -> None:
    answer = raw_request(
        service.registry_port,
        get("/v2/team%0Aapp/tags/list", "Authorization: Bearer not-a-token"),
    )
    assert answer.status == 404, answer
    assert oci_code(answer) == "NAME_UNKNOWN"
    assert "www-authenticate" not in answer.headers


def test_a_valid_name_with_bad_credentials_is_still_challenged_with_its_scope(
    service: Service,
) -> None:
    answer = raw_request(
        service.registry_port, get("/v2/team/app/tags/list", "Authorization: Bearer not-a-token")
    )
    assert answer.status == 401, answer
    assert oci_code(answer) == "UNAUTHORIZED"
    assert 'scope="repository:team/app:pull"' in answer.headers["www-authenticate"]


@pytest.mark.parametrize("request_line", ["OPTIONS * HTTP/1.1", "GET /x%0Ay HTTP/1.1"])
def test_a_path_no_route_matches_answers_oci_json(service: Service, request_line: str) -> None:
    answer = raw_request(
        service.registry_port, f"{request_line}\r\nHost: 127.0.0.1\r\n\r\n".encode()
    )
    assert answer.status == 404, answer
    assert oci_code(answer) == "NAME_UNKNOWN"


# --- the 500 answer ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with running_cluster() as started:
        yield started


@pytest.fixture(scope="module")
def broken_schema(cluster: PostgresCluster) -> Iterator[tuple[Service, str]]:
    """A server whose credentials table was dropped while it ran (every request then fails
    in a way no handler expects), and a credential it issued before."""
    database = cluster.create_database()
    with Service(env={"IMAGEDEPOT_DATABASE_URL": cluster.url(database)}) as running:
        token = running.credential("faulty", "admin")
        with psycopg.connect(cluster.url(database), autocommit=True) as connection:
            connection.execute("DROP TABLE credentials CASCADE")
        yield running, token
    cluster.drop_database(database)


@pytest.fixture(scope="module")
def without_database(cluster: PostgresCluster) -> Iterator[tuple[Service, str]]:
    """A server whose database was dropped while it ran, and a credential it issued before."""
    database = cluster.create_database()
    with Service(env={"IMAGEDEPOT_DATABASE_URL": cluster.url(database)}) as running:
        token = running.credential("faulty", "admin")
        cluster.drop_database(database)
        yield running, token


def assert_announced_close(answer: httpx.Response, service: Service) -> str:
    assert answer.status_code == 500, answer.text
    assert answer.headers["connection"] == "close"
    request_id = answer.headers["x-request-id"]
    assert len(request_id) == 32
    assert answer.headers.get_list("x-request-id") == [request_id]
    assert request_id in service.log
    return request_id


def test_an_unhandled_error_answers_in_the_dialect_of_its_path(
    broken_schema: tuple[Service, str],
) -> None:
    service, token = broken_schema
    # One pooled client for every request: each must get a whole answer, none a reset
    # connection left over from the 500 before it.
    with service.client(token) as client:
        cce = client.get("/v5/imagecaches")
        assert_announced_close(cce, service)
        assert cce.json()["error_msg"].startswith("internal error")
        assert cce.json()["error_code"]

        k8s = client.get("/apis/cci/v2/imagesnapshots")
        assert_announced_close(k8s, service)
        assert k8s.json()["kind"] == "Status"
        assert k8s.json()["code"] == 500

        glance = client.get("/v2/images")
        assert_announced_close(glance, service)
        assert glance.json()["error"]["code"] == 500

        didi = client.post("/dicloud/i/storage/cimg/list", json={"regionId": "gz"})
        request_id = assert_announced_close(didi, service)
        assert didi.json()["errno"] != 0
        assert didi.json()["requestId"] == request_id

        assert client.get("/healthz").status_code == 200


def test_an_unhandled_error_on_the_registry_port_answers_oci_json(
    broken_schema: tuple[Service, str],
) -> None:
    service, token = broken_schema
    with httpx.Client(
        base_url=f"http://127.0.0.1:{service.registry_port}", auth=("puller", token), timeout=30
    ) as client:
        for _ in range(2):
            answer = client.get("/v2/_catalog")
            assert_announced_close(answer, service)
            assert oci_code(answer) == "UNKNOWN"
            assert answer.headers["docker-distribution-api-version"] == "registry/2.0"
        assert client.get("/healthz").status_code == 200


def test_a_database_that_is_away_is_a_503_to_retry_in_every_dialect(
    without_database: tuple[Service, str],
) -> None:
    service, token = without_database
    with service.client(token) as client:
        answers = {
            "cce": client.get("/v5/imagecaches"),
            "k8s": client.get("/apis/cci/v2/imagesnapshots"),
            "glance": client.get("/v2/images"),
            "didi": client.post("/dicloud/i/storage/cimg/list", json={"regionId": "gz"}),
        }
        for dialect, answer in answers.items():
            assert answer.status_code == 503, (dialect, answer.text)
            assert answer.headers["retry-after"] == "1"
            assert "connection" not in answer.headers, "the connection stays usable"
        assert answers["cce"].json()["error_msg"].startswith("the database is not answering")
        assert answers["k8s"].json()["kind"] == "Status"
        assert answers["glance"].json()["error"]["code"] == 503
        assert answers["didi"].json()["errno"] != 0
    registry = f"http://127.0.0.1:{service.registry_port}"
    answer = httpx.get(f"{registry}/v2/_catalog", auth=("puller", token), timeout=30)
    assert answer.status_code == 503
    assert oci_code(answer) == "UNAVAILABLE"
    assert "Traceback" not in service.log
