"""The HTTP status of each core error, shared by the dialects; each dialect wraps it in its
own error body (and may override a status its API documents differently)."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.responses import Response

from imagedepot.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Gone,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    StorageFull,
    Unauthenticated,
    UpstreamUnavailable,
)

HTTP_STATUS: Sequence[tuple[type[DomainError], int]] = (
    (InvalidInput, 400),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (Gone, 410),
    (PayloadTooLarge, 413),
    (RateLimited, 429),
    (UpstreamUnavailable, 503),
    (StorageFull, 507),
)


def http_status(error: DomainError, overrides: Sequence[tuple[type[DomainError], int]] = ()) -> int:
    """The first matching of `overrides`, then of the defaults; 500 for anything else."""
    return next((code for kind, code in (*overrides, *HTTP_STATUS) if isinstance(error, kind)), 500)


def finish(response: Response, error: DomainError) -> Response:
    """Headers an error carries whatever the dialect: `Retry-After` on a rate limit."""
    if isinstance(error, RateLimited):
        response.headers["Retry-After"] = str(error.retry_after)
    return response
