"""What every dialect reads and writes the same way on the wire: a JSON request body (each
dialect raising its own error, in its own words, when the body is not JSON), the names of JSON
types that validation messages use, the UTC timestamp format, and the client's address.

The dialects must not import each other (the "dialects are independent" contract), so the
pieces of request handling they share live here, below all of them.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeGuard, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from imagedepot.domain.errors import InvalidInput
from imagedepot.domain.text import is_unicode

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


JSON_DEPTH_MAX = 100
"""How deeply a request body may nest arrays and objects; no dialect's documents come close,
and deeper ones would exhaust the parser's (and every later walk's) recursion."""

JSON_INTEGER_MIN, JSON_INTEGER_MAX = -(1 << 63), (1 << 63) - 1
"""The integers a request body may hold: what a signed 64-bit column (and Go's int64, which
Kubernetes and OpenStack clients use) can store."""

_INTEGER_DIGITS_MAX = 20
"""Longer digit strings are refused before Python turns them into an int at all."""


class _HostileJson(Exception):
    """A body that is JSON but that no endpoint reads: too deep, a number out of range, a
    string that is not Unicode."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _integer(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > _INTEGER_DIGITS_MAX:
        # The location is not known here; the walk over the result names it.
        return _OutOfRange(text)
    return int(text)


class _OutOfRange(int):
    """An integer literal too long to read, kept (as 0) so that the walk can name where it is."""

    text: str

    def __new__(cls, text: str) -> _OutOfRange:
        made = super().__new__(cls, 0)
        made.text = text
        return made


def _refuse_constant(name: str) -> float:
    raise _HostileJson(f"{name} is not a JSON number")


def _shown(text: str, limit: int = 24) -> str:
    """`text` safe to put in a message: a lone surrogate escaped, a long one cut short."""
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe if len(safe) <= limit else f"{safe[:limit]}… ({len(text)} characters)"


def _location(parts: tuple[str | int, ...]) -> str:
    """Where a value sits, as validation messages name fields (`spec.images[0]`)."""
    named = ""
    for part in parts:
        if isinstance(part, int):
            named += f"[{part}]"
        else:
            named += f".{_shown(part)}" if named else _shown(part)
    return named or "the body"


def _check_document(document: Any) -> None:
    """Refuse what parsed but no endpoint can hold, naming where it is: nesting deeper than
    JSON_DEPTH_MAX, an integer outside 64 bits, a non-finite number, a lone surrogate."""
    operations = isinstance(document, list) and all(
        isinstance(op, dict) and isinstance(op.get("path"), str) for op in document
    )

    def where(parts: tuple[str | int, ...]) -> str:
        # In a JSON patch a value is named by the path its operation targets (`/min_ram`).
        if operations and len(parts) >= 2 and parts[1] == "value" and isinstance(parts[0], int):
            rest = _location(parts[2:])
            target = _shown(document[parts[0]]["path"], 200)
            return target if rest == "the body" else f"{target} ({rest})"
        return _location(parts)

    stack: list[tuple[Any, tuple[str | int, ...]]] = [(document, ())]
    while stack:
        value, parts = stack.pop()
        if len(parts) > JSON_DEPTH_MAX:
            raise _HostileJson(f"it nests deeper than {JSON_DEPTH_MAX} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if not is_unicode(key):
                    raise _HostileJson(
                        f'{where((*parts, key))}: the name "{_shown(key)}" is not valid Unicode'
                        " (a lone surrogate)"
                    )
                stack.append((item, (*parts, key)))
        elif isinstance(value, list):
            stack.extend((item, (*parts, index)) for index, item in enumerate(value))
        elif isinstance(value, str):
            if not is_unicode(value):
                raise _HostileJson(
                    f'{where(parts)}: "{_shown(value)}" is not valid Unicode (a lone surrogate)'
                )
        elif isinstance(value, _OutOfRange):
            raise _HostileJson(
                f"{where(parts)}: the integer {_shown(value.text)} is out of range"
                " (integers must fit in a signed 64-bit value)"
            )
        elif isinstance(value, int) and not JSON_INTEGER_MIN <= value <= JSON_INTEGER_MAX:
            raise _HostileJson(
                f"{where(parts)}: the integer {value} is out of range"
                " (integers must fit in a signed 64-bit value)"
            )
        elif isinstance(value, float) and not math.isfinite(value):
            raise _HostileJson(f"{where(parts)}: the number is out of range")


def json_body(
    raw: bytes,
    *,
    allow_empty: bool = False,
    error: Callable[[str], Exception] = InvalidInput,
    subject: str = "request body",
) -> Any:
    """The body parsed as JSON; None for an empty (or blank) body where `allow_empty`.

    A body that is not JSON raises `error` with "{subject} is not valid JSON: …", and one that
    is JSON but that nothing could store (see `_check_document`) "{subject} is refused: …",
    so that each dialect keeps its own error class and wording.
    """
    if allow_empty and not raw.strip():
        return None
    try:
        document = json.loads(raw, parse_int=_integer, parse_constant=_refuse_constant)
        _check_document(document)
    except (UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise error(f"{subject} is not valid JSON: {problem}") from None
    except RecursionError:
        raise error(f"{subject} is refused: it nests deeper than {JSON_DEPTH_MAX} levels") from None
    except _HostileJson as problem:
        raise error(f"{subject} is refused: {problem.message}") from None
    return document


def decimal_integer(text: str) -> int | None:
    """`text` as an integer where it is one written in ASCII digits (an optional leading `-`)
    that fits in a signed 64-bit column; None otherwise. `str.isdigit` alone is true of `²`
    and other digits that `int` refuses, and `int` refuses more than 4,300 digits."""
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()) or len(digits) > _INTEGER_DIGITS_MAX:
        return None
    value = int(text)
    return value if JSON_INTEGER_MIN <= value <= JSON_INTEGER_MAX else None


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
    a worker thread (it may hash and write to disk), never holding the body whole.

    The next block is received while one is being written: the server stops reading the
    socket once 64 KiB wait unread, so awaiting each write before reading on left the network
    idle for every write and made an upload's receiving and its hashing take turns. At most
    one write is in flight and it has always returned when this does, even on an error, so
    the caller may abort the writer at once.
    """
    in_flight: asyncio.Future[object] | None = None
    buffer = bytearray()
    try:
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) >= UPLOAD_BLOCK:
                block = bytes(buffer)
                buffer.clear()
                if in_flight is not None:
                    await in_flight
                in_flight = asyncio.ensure_future(run_in_threadpool(write, block))
        if in_flight is not None:
            await in_flight
        if buffer:
            await run_in_threadpool(write, bytes(buffer))
    finally:
        if in_flight is not None and not in_flight.done():
            await asyncio.wait([in_flight])
