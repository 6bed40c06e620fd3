"""Identity and access against a real `serve`: AK/SK signatures exactly as huaweicloudsdkcce
makes them, roles, revocation, abuse limits, quotas, the audit log and secrets at rest."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from imagedepot.services.pull_tokens import REVOCATION_CHECK
from tests.support.images import make_layer, push_image
from tests.support.registry import RegistryServer
from tests.support.service import Service, wait_for_status, wait_gone

LIMITS = {
    "IMAGEDEPOT_RATE_LIMIT": "2",
    "IMAGEDEPOT_RATE_BURST": "6",
    "IMAGEDEPOT_MAX_BODY_BYTES": "4096",
    "IMAGEDEPOT_QUOTA_CACHES": "2",
}


@pytest.fixture(scope="module")
def limited() -> Iterator[Service]:
    with Service(env=LIMITS) as running:
        yield running


def aksk(service: Service, project: str, role: str = "member") -> dict[str, str]:
    result = service.cli(
        "credentials",
        "create",
        "--data-dir",
        str(service.data_dir),
        "--project",
        project,
        "--role",
        role,
        "--aksk",
        "--json",
    )
    issued: dict[str, str] = json.loads(result.stdout)
    assert set(issued) == {
        "project_id",
        "project",
        "credential_id",
        "role",
        "access_key",
        "secret_key",
    }
    assert (issued["project"], issued["role"]) == (project, role)
    return issued


def sdk_client(service: Service, issued: dict[str, str], home: Path, monkeypatch: Any) -> Any:
    from huaweicloudsdkcce.v5 import CceClient

    monkeypatch.setenv("HOME", str(home))
    credentials = BasicCredentials(issued["access_key"], issued["secret_key"], issued["project_id"])
    return (
        CceClient.new_builder().with_credentials(credentials).with_endpoints([service.url]).build()
    )


def signed(
    service: Service,
    issued: dict[str, str],
    method: str,
    path: str,
    query: list[tuple[str, Any]] | None = None,
    body: bytes = b"",
    date: datetime | None = None,
    secret_key: str | None = None,
) -> dict[str, str]:
    """Headers the SDK's own signer makes for this request."""
    headers = {"Content-Type": "application/json", "X-Project-Id": issued["project_id"]}
    if date is not None:
        headers["X-Sdk-Date"] = date.strftime("%Y%m%dT%H%M%SZ")
    request = SdkRequest(
        method=method,
        schema="http",
        host=f"127.0.0.1:{service.port}",
        resource_path=path,
        query_params=query or [],
        header_params=headers,
        body=body,
    )
    credentials = BasicCredentials(issued["access_key"], secret_key or issued["secret_key"])
    return {k: str(v) for k, v in Signer(credentials).sign(request).header_params.items()}


# The seed's created_at format ("2024-11-25 06:32:34.923248 +0000 UTC") is not one the SDK's
# date parser reads; against the real cloud it warns the same way and keeps the string.
SEED_DATE_WARNING = "ignore::huaweicloudsdkcore.warning.warning.TypeConversionWarning"


@pytest.mark.filterwarnings(SEED_DATE_WARNING)
def test_the_huawei_sdk_drives_the_whole_lifecycle(
    service: Service, registry: RegistryServer, tmp_path: Path, monkeypatch: Any
) -> None:
    from huaweicloudsdkcce.v5 import (
        CreateImageCacheRequest,
        CreateImageCacheRequestBody,
        DeleteImageCacheRequest,
        ImageCacheBuildingConfig,
        ListImageCachesRequest,
        ShowImageCacheRequest,
    )

    push_image(registry.url, "sdk/app", "1", [make_layer(seed=300)])
    issued = aksk(service, "sdk-project", "admin")
    client = sdk_client(service, issued, tmp_path, monkeypatch)
    body = CreateImageCacheRequestBody(
        name="sdk-cache",
        images=[f"{registry.endpoint}/sdk/app:1"],
        image_cache_size=20,
        retention_days=3,
        building_config=ImageCacheBuildingConfig(image_pull_secrets=[]),
    )
    created = client.create_image_cache(CreateImageCacheRequest(body=body))
    cache_id = created.image_cache.id
    assert created.image_cache.status == "Creating"
    listed = client.list_image_caches(ListImageCachesRequest(name="sdk-cache"))
    assert [cache.id for cache in listed.image_caches] == [cache_id]
    assert client.list_image_caches(ListImageCachesRequest(name="other")).image_caches == []
    with service.client(service.credential("sdk-project", "reader")) as reader:
        wait_for_status(reader, cache_id, {"Available"})
    shown = client.show_image_cache(ShowImageCacheRequest(image_cache_id=cache_id))
    assert shown.image_cache.status == "Available"
    assert shown.image_cache.retention_days == 3
    assert shown.image_cache.created_at.endswith(" +0000 UTC")
    deleted = client.delete_image_cache(DeleteImageCacheRequest(image_cache_id=cache_id))
    assert deleted.status_code == 202
    with service.client(service.credential("sdk-project", "reader")) as reader:
        wait_gone(reader, cache_id)
    with pytest.raises(ClientRequestException) as missing:
        client.show_image_cache(ShowImageCacheRequest(image_cache_id=cache_id))
    assert missing.value.status_code == 404
    assert missing.value.error_code == "CCE.01404001"


@pytest.mark.filterwarnings(SEED_DATE_WARNING)
def test_a_reader_key_can_list_but_not_delete(
    service: Service, registry: RegistryServer, tmp_path: Path, monkeypatch: Any
) -> None:
    from huaweicloudsdkcce.v5 import DeleteImageCacheRequest, ListImageCachesRequest

    member = service.credential("sdk-roles", "member")
    with service.client(member) as client:
        created = client.post(
            "/v5/imagecaches", json={"name": "keep", "images": [f"{registry.endpoint}/nothing/z:1"]}
        )
        cache_id = created.json()["image_cache"]["id"]
    reader = sdk_client(service, aksk(service, "sdk-roles", "reader"), tmp_path, monkeypatch)
    assert len(reader.list_image_caches(ListImageCachesRequest()).image_caches) == 1
    with pytest.raises(ClientRequestException) as denied:
        reader.delete_image_cache(DeleteImageCacheRequest(image_cache_id=cache_id))
    assert denied.value.status_code == 403
    assert denied.value.error_code == "CCE.01403001"
    with service.client(member) as client:
        assert (
            client.get(f"/v5/imagecaches/{cache_id}").json()["image_cache"]["status"] != "Deleting"
        )


TAMPERINGS = [
    "body",
    "path",
    "query",
    "header",
    "secret",
    "stale-date",
    "future-date",
    "unknown-key",
    "unsigned-date",
]


@pytest.mark.parametrize("tampering", TAMPERINGS)
def test_anything_altered_after_signing_is_a_401(service: Service, tampering: str) -> None:
    issued = aksk(service, "sdk-tamper")
    body = json.dumps({"name": "signed", "images": ["busybox"]}).encode()
    path, query = "/v5/imagecaches", [("name", "signed")]
    if tampering == "path":  # signed for one cache id, sent for another
        path, query, body = "/v5/imagecaches/aaaa", [], b""
    date = None
    secret = None
    if tampering == "stale-date":
        date = datetime.now(UTC) - timedelta(minutes=20)
    if tampering == "future-date":
        date = datetime.now(UTC) + timedelta(minutes=20)
    if tampering == "secret":
        secret = "x" * 40
    method = "GET" if tampering == "path" else "POST"
    headers = signed(service, issued, method, path, query, body, date=date, secret_key=secret)
    if tampering == "body":
        body = body.replace(b"busybox", b"alpine")
    elif tampering == "path":
        path = "/v5/imagecaches/bbbb"
    elif tampering == "query":
        query = [("name", "other")]
    elif tampering == "header":
        headers["User-Agent"] = "changed"
        headers["Authorization"] = (
            headers["Authorization"].replace("SignedHeaders=", "SignedHeaders=user-agent;", 1)
            if "user-agent" not in headers["Authorization"]
            else headers["Authorization"]
        )
        headers["Content-Type"] = "application/json;charset=utf-8"
    elif tampering == "unknown-key":
        headers["Authorization"] = headers["Authorization"].replace(
            issued["access_key"], "AKUNKNOWN00000000000"
        )
    elif tampering == "unsigned-date":
        headers["Authorization"] = headers["Authorization"].replace(";x-sdk-date", "")
    with httpx.Client(base_url=service.url) as client:
        response = client.request(method, path, params=query, content=body, headers=headers)
        assert response.status_code == 401, response.text
        assert response.json()["error_code"] == "CCE.01401001"
        untampered = signed(service, issued, "GET", "/v5/imagecaches")
        listed = client.get("/v5/imagecaches", headers=untampered)
        assert listed.status_code == 200
        assert listed.json() == {"image_caches": []}


def test_x_project_id_must_name_the_credentials_project(service: Service) -> None:
    issued = aksk(service, "sdk-mine")
    other = aksk(service, "sdk-theirs")
    headers = signed(
        service, {**issued, "project_id": other["project_id"]}, "GET", "/v5/imagecaches"
    )
    response = httpx.get(f"{service.url}/v5/imagecaches", headers=headers)
    assert response.status_code == 403
    token = service.credential("sdk-mine")
    response = httpx.get(
        f"{service.url}/v5/imagecaches",
        headers={"X-Auth-Token": token, "X-Project-Id": other["project_id"]},
    )
    assert response.status_code == 403


def test_a_revoked_credential_stops_working_at_once(service: Service) -> None:
    token = service.credential("revoking")
    assert (
        httpx.get(f"{service.url}/v5/imagecaches", headers={"X-Auth-Token": token}).status_code
        == 200
    )
    registry = f"http://127.0.0.1:{service.registry_port}"
    pull_token = httpx.get(f"{registry}/token", auth=("any", token)).json()["token"]
    catalog = f"{registry}/v2/_catalog"
    pull = {"Authorization": f"Bearer {pull_token}"}
    assert httpx.get(catalog, headers=pull).status_code == 200
    listed = json.loads(
        service.cli(
            "credentials",
            "list",
            "--data-dir",
            str(service.data_dir),
            "--project",
            "revoking",
            "--json",
        ).stdout
    )
    assert len(listed) == 1
    assert "token" not in json.dumps(listed).replace('"kind": "token"', "")
    service.cli("credentials", "revoke", "--data-dir", str(service.data_dir), listed[0]["id"])
    response = httpx.get(f"{service.url}/v5/imagecaches", headers={"X-Auth-Token": token})
    assert response.status_code == 401
    assert "revoked" in response.json()["error_msg"]
    # The pull token issued before stops within seconds too, not at its expiry.
    time.sleep(REVOCATION_CHECK + 0.5)
    refused = httpx.get(catalog, headers=pull)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["errors"][0]["message"]


def test_the_rate_limit_answers_429_then_recovers(limited: Service) -> None:
    token = limited.credential("busy")
    with limited.client(token) as client:
        statuses = [client.get("/v5/imagecaches") for _ in range(12)]
        refused = [r for r in statuses if r.status_code == 429]
        assert refused, [r.status_code for r in statuses]
        assert refused[0].json()["error_code"] == "CCE.01429001"
        assert int(refused[0].headers["retry-after"]) >= 1
        time.sleep(int(refused[0].headers["retry-after"]) + 0.5)
        assert client.get("/v5/imagecaches").status_code == 200
    other = limited.credential("quiet")
    with limited.client(other) as client:
        assert client.get("/v5/imagecaches").status_code == 200


def test_guessing_credentials_is_cut_off_per_address_on_both_ports() -> None:
    # Three failures allowed, forgiven at one per second.
    env = {"IMAGEDEPOT_AUTH_FAILURE_BURST": "3", "IMAGEDEPOT_AUTH_FAILURE_RATE": "1"}
    with Service(env=env) as service:
        token = service.credential("guarded")
        registry = f"http://127.0.0.1:{service.registry_port}"
        with httpx.Client(base_url=service.url) as api, httpx.Client(base_url=registry) as oci:
            assert api.get("/v5/imagecaches", headers={"X-Auth-Token": token}).status_code == 200
            for guess in ("a", "b"):
                wrong = api.get("/v5/imagecaches", headers={"X-Auth-Token": guess})
                assert wrong.status_code == 401
            # The registry port counts against the same address.
            assert oci.get("/token", auth=("user", "c")).status_code == 401
            # Out of guesses: even the right token is refused now, without being looked at.
            cut_off = api.get("/v5/imagecaches", headers={"X-Auth-Token": token})
            assert cut_off.status_code == 429
            assert cut_off.json()["error_code"] == "CCE.01429001"
            assert "failed authentications" in cut_off.json()["error_msg"]
            refused_token = oci.get("/token", auth=("user", token))
            assert refused_token.status_code == 429
            assert refused_token.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
            assert int(refused_token.headers["retry-after"]) >= 1
            refused_pull = oci.get("/v2/_catalog", headers={"Authorization": f"Bearer {token}"})
            assert refused_pull.status_code == 429
            time.sleep(int(cut_off.headers["retry-after"]) + 0.5)
            assert api.get("/v5/imagecaches", headers={"X-Auth-Token": token}).status_code == 200
            assert oci.get("/token", auth=("user", token)).status_code == 200


def test_a_body_over_the_limit_is_a_413_and_changes_nothing(limited: Service) -> None:
    token = limited.credential("bulky")
    with limited.client(token) as client:
        huge = {"name": "huge", "images": ["busybox"], "padding": "x" * 8192}
        response = client.post("/v5/imagecaches", json=huge)
        assert response.status_code == 413
        assert response.json()["error_code"] == "CCE.01413001"
        assert client.get("/v5/imagecaches").json() == {"image_caches": []}
        small = client.post("/v5/imagecaches", json={"name": "small", "images": ["busybox"]})
        assert small.status_code == 201


def test_the_cache_quota_is_enforced_with_a_clear_error(limited: Service) -> None:
    token = limited.credential("quota")
    with limited.client(token) as client:
        for name in ("one", "two"):
            assert (
                client.post(
                    "/v5/imagecaches", json={"name": name, "images": ["busybox"]}
                ).status_code
                == 201
            )
        third = client.post("/v5/imagecaches", json={"name": "three", "images": ["busybox"]})
        assert third.status_code == 403
        assert "quota exceeded" in third.json()["error_msg"]
        assert len(client.get("/v5/imagecaches").json()["image_caches"]) == 2


def test_state_changes_are_audited(service: Service) -> None:
    token = service.credential("audited", "reader")
    writer = service.credential("audited", "admin")
    with service.client(writer) as client:
        created = client.post("/v5/imagecaches", json={"name": "audit-me", "images": ["busybox"]})
        cache_id = created.json()["image_cache"]["id"]
    with service.client(token) as client:
        assert client.delete(f"/v5/imagecaches/{cache_id}").status_code == 403
    with service.client(writer) as client:
        assert client.delete(f"/v5/imagecaches/{cache_id}").status_code == 202
        wait_gone(client, cache_id)
    events = json.loads(
        service.cli(
            "audit", "--data-dir", str(service.data_dir), "--project", "audited", "--json"
        ).stdout
    )
    seen = [(e["action"], e["status"]) for e in reversed(events)]
    assert seen == [
        ("cli:credential:create", 200),  # the two credentials, made offline
        ("cli:credential:create", 200),
        ("cce:imageCache:create", 201),
        ("cce:imageCache:delete", 403),
        ("cce:imageCache:delete", 202),
    ]
    calls = [e for e in events if e["action"].startswith("cce:")]
    assert all(e["target"].startswith("/v5/imagecaches") and e["request_id"] for e in calls)
    assert calls[0]["credential_id"] != calls[1]["credential_id"]


def test_no_secret_reaches_the_database_files_or_the_log(
    service: Service, registry: RegistryServer
) -> None:
    password = "Unmistakable-Pa55word-4711"
    service.add_pull_secret("at-rest", "hidden", registry.endpoint, "someone", password)
    issued = aksk(service, "at-rest")
    token = service.credential("at-rest")
    headers = signed(service, issued, "GET", "/v5/imagecaches")
    assert httpx.get(f"{service.url}/v5/imagecaches", headers=headers).status_code == 200
    assert (
        httpx.get(f"{service.url}/v5/imagecaches", headers={"X-Auth-Token": token}).status_code
        == 200
    )
    signature = headers["Authorization"].rsplit("=", 1)[1]
    for path in service.data_dir.rglob("*"):
        if path.is_file() and path.name != "serve.log":
            data = path.read_bytes()
            for secret in (password, issued["secret_key"], token):
                assert secret.encode() not in data, f"{secret[:4]}… found in {path}"
    for secret in (password, issued["secret_key"], token, signature):
        assert secret not in service.log


def test_rotating_the_secret_key_keeps_every_secret_usable(tmp_path: Path) -> None:
    with Service(data_dir=tmp_path / "data") as running:
        issued = aksk(running, "rotating")
        old_key = (running.data_dir / "secret.key").read_bytes()
        result = running.cli("secrets", "rotate-key", "--data-dir", str(running.data_dir))
        assert "re-sealed 1" in result.stdout
        assert (running.data_dir / "secret.key").read_bytes() != old_key
        assert b"," not in (running.data_dir / "secret.key").read_bytes()
        running.stop()
        running.start()
        headers = signed(running, issued, "GET", "/v5/imagecaches")
        assert httpx.get(f"{running.url}/v5/imagecaches", headers=headers).status_code == 200
