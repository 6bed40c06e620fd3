"""Our canonical request and signature agree with the Huawei SDK's own signer."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from imagedepot.domain import signing
from imagedepot.domain.errors import Unauthenticated
from imagedepot.domain.identity import Role
from imagedepot.domain.policy import Policy

AK, SK = "AKEXAMPLE0000000000", "s" * 40


def sdk_signed(method: str, path: str, query: list[tuple[str, object]], body: bytes) -> SdkRequest:
    headers = {
        "Content-Type": "application/json",
        "X-Project-Id": "p1",
        "User-Agent": "huaweicloud-usdk-python/3.0",
    }
    request = SdkRequest(
        method=method,
        schema="http",
        host="127.0.0.1:8080",
        resource_path=path,
        query_params=query,
        header_params=headers,
        body=body,
    )
    return Signer(BasicCredentials(AK, SK)).sign(request)


@pytest.mark.parametrize(
    ("method", "path", "query", "body"),
    [
        ("GET", "/v5/imagecaches", [("name", "web")], b""),
        ("POST", "/v5/imagecaches", [], b'{"name": "web", "images": ["busybox"]}'),
        ("DELETE", "/v5/imagecaches/3f2a-9 x", [], b""),
        ("GET", "/v5/imagecaches", [("b", "2"), ("a", "x y~z"), ("a", "1")], b""),
    ],
)
def test_signatures_match_the_sdk(
    method: str, path: str, query: list[tuple[str, object]], body: bytes
) -> None:
    signed = sdk_signed(method, path, query, body)
    claim = signing.parse_authorization(signed.header_params["Authorization"])
    assert claim.access_key == AK
    headers = {k.lower(): str(v) for k, v in signed.header_params.items()}
    canonical = signing.canonical_request(
        method,
        path,
        [(k, str(v)) for k, v in query],
        headers,
        claim.signed_headers,
        signing.payload_hash(body, headers.get("x-sdk-content-sha256")),
    )
    assert signing.sign(SK, headers["x-sdk-date"], canonical) == claim.signature
    assert signing.sign("wrong" + SK[5:], headers["x-sdk-date"], canonical) != claim.signature


def test_a_malformed_authorization_is_refused() -> None:
    with pytest.raises(Unauthenticated):
        signing.parse_authorization("SDK-HMAC-SHA256 Access=AK")
    with pytest.raises(Unauthenticated):
        signing.parse_sdk_date("yesterday")
    assert signing.parse_sdk_date("20260101T000102Z") == datetime(2026, 1, 1, 0, 1, 2, tzinfo=UTC)


def test_a_signed_header_that_did_not_arrive_cannot_match() -> None:
    with pytest.raises(Unauthenticated):
        signing.canonical_request("GET", "/", [], {}, ("host",), signing.EMPTY_SHA256)


def test_default_policy() -> None:
    policy = Policy.default()
    assert policy.allows(Role.READER, "cce:imageCache:list")
    assert policy.allows(Role.READER, "registry:pull")
    assert not policy.allows(Role.READER, "cce:imageCache:delete")
    assert policy.allows(Role.MEMBER, "cce:imageCache:delete")
    assert not policy.allows(Role.MEMBER, "secrets:get")
    assert policy.allows(Role.ADMIN, "secrets:get")


def test_an_operator_policy_replaces_a_role() -> None:
    policy = Policy.from_document({"roles": {"reader": ["cce:imageCache:get"]}})
    assert policy.allows(Role.READER, "cce:imageCache:get")
    assert not policy.allows(Role.READER, "cce:imageCache:list")
    assert policy.allows(Role.MEMBER, "cce:imageCache:list")
