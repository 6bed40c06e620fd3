"""Glance's error body, `{"error": {"code", "title", "message"}}`, which the OpenStack clients
parse, and the HTTP status Glance gives each core error. Kept apart so that the image and
member routes (and the app's fallback for unmatched paths) render errors through one piece of
code.
"""

from __future__ import annotations

from http import HTTPStatus

from starlette.responses import JSONResponse, Response

from imagedepot.api.errors import finish, http_status
from imagedepot.domain.errors import DomainError, QuotaExceeded, StorageFull


class UnsupportedMediaType(DomainError):
    """The request body's Content-Type is not one this call accepts (HTTP 415)."""


_STATUS_OVERRIDES: list[tuple[type[DomainError], int]] = [
    (UnsupportedMediaType, 415),
    (QuotaExceeded, 413),
    (StorageFull, 413),
]
"""Glance answers an over-quota upload, and one its store has no room for, 413; a wrong
PATCH media type 415."""


def error_response(status: int, message: str) -> JSONResponse:
    title = HTTPStatus(status).phrase
    return JSONResponse(
        {"error": {"code": status, "title": title, "message": message}}, status_code=status
    )


def render_error(error: DomainError) -> Response:
    status = http_status(error, _STATUS_OVERRIDES)
    return finish(error_response(status, error.message), error)
