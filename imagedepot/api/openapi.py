"""What every dialect's OpenAPI 3.0 document is made of, and the route that publishes one.

Each dialect describes its own routes, so that users can generate clients and the tests can
hold the server to what it claims (schemathesis, in `tests/e2e/test_openapi_conformance.py`):
`k8s/openapi.py` (ImageSnapshot, at `/openapi/v3/apis/cci/v2`), `cce_openapi.py`
(`/v5/openapi.json`), `glance/openapi.py` (`/v2/openapi.json`) and `didi_openapi.py`
(`/dicloud/openapi.json`). What is the same for all of them lives here, below the dialects
(which must not import each other): schema shorthands, the error answers the gate and the app
give on every route (with `Allow` on 405 and `Retry-After` on 429), the three ways the gate
accepts a credential, and serving a document as one static, cacheable JSON body.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imagedepot.api.auth import BODY_METHODS, public


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def prop(kind: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "description": description, **extra}


def nullable(kind: str, description: str, **extra: Any) -> dict[str, Any]:
    return prop(kind, description, nullable=True, **extra)


def strings(description: str, **extra: Any) -> dict[str, Any]:
    return prop("array", description, items={"type": "string", "default": ""}, **extra)


def string_map(description: str) -> dict[str, Any]:
    return prop("object", description, additionalProperties={"type": "string", "default": ""})


def pattern(regex: re.Pattern[str]) -> str:
    """A Python pattern as a JSON Schema one (ECMA 262 has `$`, not `\\Z`)."""
    return regex.pattern.replace("\\Z", "$")


def json_content(schema: dict[str, Any], media_type: str = "application/json") -> dict[str, Any]:
    return {media_type: {"schema": schema}}


REQUEST_ID = "X-Request-Id"
_REQUEST_ID_HEADER = {
    "description": "The request's id, as the server log names it (on every response).",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}
_ALLOW_HEADER = {
    "description": "The methods the path answers.",
    "required": True,
    "schema": {"type": "string"},
}
_RETRY_AFTER = {
    "description": "Seconds to wait before trying again.",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}

_WHY = {
    400: "The request is malformed, or a field or parameter is out of range (named).",
    401: "No credential, or one that is not valid.",
    403: "The credential may not do this, or a quota or rule forbids it.",
    404: "No such object in the caller's project.",
    405: "The path does not answer this method; `Allow` lists those it does.",
    406: "The response cannot be written in an accepted type.",
    409: "The request collides with the object's current state.",
    410: "What was asked for is no longer kept.",
    413: "The request body (or the image data) is over the server's limit.",
    415: "The body's Content-Type is not one this call reads.",
    422: "The object is invalid (the causes name the fields).",
    429: "Too many requests from this credential, or failed authentications from this "
    "address; `Retry-After` says when to retry.",
    503: "The database (or an upstream) is not answering; retry shortly.",
    507: "The store has no room left.",
}


def response(
    description: str,
    schema: dict[str, Any] | None = None,
    *,
    media_type: str = "application/json",
    headers: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One response; every response carries `X-Request-Id`."""
    answer: dict[str, Any] = {
        "description": description,
        "headers": {REQUEST_ID: _REQUEST_ID_HEADER, **(headers or {})},
    }
    if schema is not None:
        answer["content"] = json_content(schema, media_type)
    return answer


def error_codes(method: str, *extra: int) -> list[int]:
    """What any gated route may answer besides its own: a malformed request or signature
    (400), no or a bad credential (401), a role that may not (403), a method the path does not
    answer (405), a body over the limit (413, where a body is read), the rate limits (429),
    the database away (503); and `extra`."""
    codes = {400, 401, 403, 405, 429, 503, *extra}
    if method.upper() in BODY_METHODS:
        codes.add(413)
    return sorted(codes)


def error_responses(codes: Iterable[int], schema: dict[str, Any]) -> dict[str, Any]:
    """Each code's response in the dialect's error body `schema`."""
    answers: dict[str, Any] = {}
    for code in codes:
        headers: dict[str, Any] = {}
        if code == 405:
            headers["Allow"] = _ALLOW_HEADER
        if code == 429:
            headers["Retry-After"] = {**_RETRY_AFTER, "required": True}
        if code == 503:
            headers["Retry-After"] = _RETRY_AFTER
        phrase = HTTPStatus(code).phrase
        answers[str(code)] = response(f"{phrase}: {_WHY[code]}", schema, headers=headers)
    return answers


def operation(
    method: str,
    summary: str,
    operation_id: str,
    success: dict[str, Any],
    *extra_errors: int,
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An operation answering `success`, or the errors every `method` may get plus
    `extra_errors`, each with the dialect's error body (its schema named `Error`)."""
    described: dict[str, Any] = {
        "summary": summary,
        "operationId": operation_id,
        "responses": {
            **success,
            **error_responses(error_codes(method, *extra_errors), ref("Error")),
        },
    }
    if body is not None:
        described["requestBody"] = body
    if parameters:
        described["parameters"] = parameters
    return described


def query_parameter(
    name: str, schema: dict[str, Any], description: str | None = None, *, required: bool = False
) -> dict[str, Any]:
    """A query parameter; `required` ones must be sent."""
    return _parameter(name, "query", schema, description, required)


def path_parameter(name: str, description: str | None = None) -> dict[str, Any]:
    """A path segment naming an object (a string; path parameters are always required)."""
    return _parameter(name, "path", {"type": "string"}, description, True)


def _parameter(
    name: str, located: str, schema: dict[str, Any], description: str | None, required: bool
) -> dict[str, Any]:
    described: dict[str, Any] = {"name": name, "in": located}
    if required:
        described["required"] = True
    if description is not None:
        described["description"] = description
    described["schema"] = schema
    return described


def required_json(schema: str) -> dict[str, Any]:
    """A request body that must be JSON of the named schema."""
    return {"required": True, "content": {"application/json": {"schema": ref(schema)}}}


SECURITY_SCHEMES: dict[str, Any] = {
    "token": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Auth-Token",
        "description": "A token made by `imagedepot credentials create` (or the admin token; "
        "an admin names the project with `X-Project-Id`).",
    },
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "The same token as `Authorization: Bearer TOKEN`.",
    },
    "akSk": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "An access key pair, the request signed as the Huawei Cloud SDKs sign "
        "it: `Authorization: SDK-HMAC-SHA256 Access=AK, SignedHeaders=…, Signature=…` with "
        "`X-Sdk-Date` (and `X-Sdk-Content-Sha256: UNSIGNED-PAYLOAD` for streamed image data).",
    },
}
SECURITY: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]
"""Any one of the schemes, on every dialect: the gate reads them all the same way."""


def encode(document: dict[str, Any]) -> tuple[bytes, str]:
    """The document as served, and a digest of it (its ETag)."""
    encoded = json.dumps(document, sort_keys=True).encode()
    return encoded, hashlib.sha256(encoded).hexdigest()[:32].upper()


def document_route(path: str, document: dict[str, Any]) -> Route:
    """`GET path` answers `document`, to anyone (it describes the API, not anyone's data)."""
    encoded, digest = encode(document)

    @public
    async def serve(_: Request) -> Response:
        return Response(
            encoded,
            media_type="application/json",
            headers={"Cache-Control": "public, max-age=3600", "ETag": f'"{digest}"'},
        )

    return Route(path, serve, methods=["GET"])
