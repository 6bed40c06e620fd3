"""What every dialect reads and writes the same way on the wire: a JSON request body (each
dialect raising its own error, in its own words, when the body is not JSON), the names of JSON
types that validation messages use, the UTC timestamp format, and the client's address.

The dialects must not import each other (the "dialects are independent" contract), so the
pieces of request handling they share live here, below all of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeGuard, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from imagedepot.domain.errors import InvalidInput

ISO_SECONDS = "%Y-%m-%dT%H:%M:%SZ"
"""A UTC time to the second, as Glance, Kubernetes and imagedepot's own extensions write it."""

JSON_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    list: "an array",
    dict: "an object",
}
"""How messages name the JSON type a field must have (`name must be a string`)."""

T = TypeVar("T")


def utc_timestamp(moment: datetime | None) -> str | None:
    """`moment` in UTC as `ISO_SECONDS`; None for None."""
    return None if moment is None else moment.astimezone(UTC).strftime(ISO_SECONDS)


def is_json_type(value: object, kind: type[T]) -> TypeGuard[T]:
    """Whether `value` has the JSON type `kind`; a boolean is not an integer here."""
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def json_body(
    raw: bytes,
    *,
    allow_empty: bool = False,
    error: Callable[[str], Exception] = InvalidInput,
    subject: str = "request body",
) -> Any:
    """The body parsed as JSON; None for an empty (or blank) body where `allow_empty`.

    A body that is not JSON raises `error` with "{subject} is not valid JSON: …", so that each
    dialect keeps its own error class and wording.
    """
    if allow_empty and not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise error(f"{subject} is not valid JSON: {problem}") from None


def json_object(raw: bytes, *, allow_empty: bool = False) -> dict[str, Any]:
    """The body as a JSON object (InvalidInput otherwise); `{}` for an empty (or blank) body
    where `allow_empty`."""
    if allow_empty and not raw.strip():
        return {}
    body = json_body(raw)
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    return body


def client_host(request: Request) -> str | None:
    """The address the request came from, where the server knows it."""
    return request.client.host if request.client else None


UPLOAD_BLOCK = 1 << 20
"""Uploaded bodies are handed on in blocks of about this many bytes."""


async def stream_body(request: Request, write: Callable[[bytes], object]) -> None:
    """Hand the request body to `write` in blocks of about UPLOAD_BLOCK bytes, each written in
    a worker thread (it may hash and write to disk), never holding the body whole."""
    buffer = bytearray()
    async for chunk in request.stream():
        buffer += chunk
        if len(buffer) >= UPLOAD_BLOCK:
            block = bytes(buffer)
            buffer.clear()
            await run_in_threadpool(write, block)
    if buffer:
        await run_in_threadpool(write, bytes(buffer))
