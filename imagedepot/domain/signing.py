"""The `SDK-HMAC-SHA256` request signature the Huawei Cloud SDKs compute, as pure functions.

The server rebuilds the canonical request from what arrived and recomputes the
signature with the stored secret key; see reference/clients.md for the
algorithm. Everything here is deterministic text, so it is tested against
signatures made by the SDK's own signer.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from imagedepot.domain.errors import Unauthenticated

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_AUTHORIZATION_RE = re.compile(
    rf"^{ALGORITHM}\s+Access=(?P<ak>[^,\s]+),\s*SignedHeaders=(?P<headers>[^,\s]+),"
    r"\s*Signature=(?P<signature>[0-9a-fA-F]+)\s*$"
)


@dataclass(frozen=True)
class SignatureClaim:
    """What an `Authorization: SDK-HMAC-SHA256 …` header claims."""

    access_key: str
    signed_headers: tuple[str, ...]
    signature: str


def is_signature_header(authorization: str) -> bool:
    return authorization.startswith(ALGORITHM + " ")


def parse_authorization(authorization: str) -> SignatureClaim:
    match = _AUTHORIZATION_RE.match(authorization.strip())
    if match is None:
        raise Unauthenticated(
            f"Authorization must be '{ALGORITHM} Access=AK, SignedHeaders=a;b, Signature=HEX'"
        )
    headers = tuple(match["headers"].lower().split(";"))
    return SignatureClaim(match["ak"], headers, match["signature"].lower())


def parse_sdk_date(value: str | None) -> datetime:
    if not value:
        raise Unauthenticated("X-Sdk-Date is required with an SDK-HMAC-SHA256 signature")
    try:
        return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise Unauthenticated(
            f"X-Sdk-Date must look like 20250101T000000Z, got {value!r}"
        ) from None


def canonical_uri(path: str) -> str:
    encoded = "/".join(quote(piece, safe="~") for piece in unquote(path).split("/"))
    return encoded if encoded.endswith("/") else encoded + "/"


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    return "&".join(
        f"{quote(key, safe='~')}={quote(value, safe='~')}" for key, value in sorted(pairs)
    )


def payload_hash(body: bytes, content_sha256_header: str | None) -> str:
    if not body:
        return EMPTY_SHA256
    if content_sha256_header:
        return content_sha256_header
    return hashlib.sha256(body).hexdigest()


def canonical_request(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: tuple[str, ...],
    body_hash: str,
) -> str:
    """`headers` keyed by lower-case name; a signed header that did not arrive cannot match."""
    lines = []
    for name in signed_headers:
        if name not in headers:
            raise Unauthenticated(f"signed header {name!r} is missing from the request")
        lines.append(f"{name}:{headers[name].strip()}")
    return "\n".join(
        [
            method.upper(),
            canonical_uri(path),
            canonical_query(query),
            "\n".join(lines) + "\n",
            ";".join(signed_headers),
            body_hash,
        ]
    )


def string_to_sign(sdk_date: str, canonical: str) -> str:
    return f"{ALGORITHM}\n{sdk_date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def sign(secret_key: str, sdk_date: str, canonical: str) -> str:
    message = string_to_sign(sdk_date, canonical).encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()
