"""Errors the Kubernetes way: every failure of the dialect reaches the client as a `Status`
object with a code, a CamelCase reason and, for invalid bodies, one cause per field at fault.
This module owns that shape (`StatusError`, `Cause`, the renderers and the usual 400/404/422
constructors) so that the parsing, patching and route modules raise errors without knowing
how they are written, and so that the app can render its own 404/405 on the dialect's paths
the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response

from imagedepot.api.errors import finish, http_status
from imagedepot.api.k8s.names import GROUP, KIND, PLURAL
from imagedepot.domain.errors import DomainError, InvalidInput

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    504: "Timeout",
}


@dataclass(frozen=True)
class Cause:
    field: str
    message: str
    reason: str = "FieldValueInvalid"


class StatusError(DomainError):
    """An error already phrased as a Kubernetes `Status` (code, reason, details)."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        name: str | None = None,
        causes: Iterable[Cause] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.name = name
        self.causes = list(causes)


def status_body(
    code: int,
    message: str,
    reason: str | None = None,
    name: str | None = None,
    causes: Iterable[Cause] = (),
    kind: str = PLURAL,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
        "code": code,
    }
    details: dict[str, Any] = {}
    if name is not None:
        details.update(name=name, group=GROUP, kind=kind)
    cause_list = [{"reason": c.reason, "message": c.message, "field": c.field} for c in causes]
    if cause_list:
        details["causes"] = cause_list
    if details:
        body["details"] = details
    return body


def status_response(code: int, message: str, **kwargs: Any) -> JSONResponse:
    return JSONResponse(status_body(code, message, **kwargs), status_code=code)


def render_error(error: DomainError) -> Response:
    if isinstance(error, StatusError):
        return status_response(
            error.code, error.message, reason=error.reason, name=error.name, causes=error.causes
        )
    if isinstance(error, InvalidInput):
        causes = [Cause(error.field, error.message)] if error.field else []
        return status_response(422, error.message, causes=causes)
    return finish(status_response(http_status(error), error.message), error)


def bad_request(message: str) -> StatusError:
    return StatusError(400, message)


def not_found(name: str) -> StatusError:
    return StatusError(404, f'{PLURAL}.{GROUP} "{name}" not found', name=name)


def invalid(name: str, causes: list[Cause]) -> StatusError:
    summary = "; ".join(f"{c.field}: {c.message}" for c in causes)
    return StatusError(
        422, f'{KIND}.{GROUP} "{name}" is invalid: {summary}', name=name, causes=causes
    )


def is_k8s_path(path: str) -> bool:
    """Paths this dialect answers, so that the app renders their 404/405 as a Status."""
    return path in ("/api", "/apis", "/version") or path.startswith(("/api/", "/apis/", "/openapi"))


def http_error(code: int, message: str) -> Response:
    return status_response(code, message)
