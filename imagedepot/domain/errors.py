"""Errors the core raises; each dialect maps them to its own status codes and error bodies.

They live in the domain so that services and dialects agree on meaning without
importing each other.
"""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a caller can be told about."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(DomainError):
    """The request is malformed or a field is out of range (HTTP 400)."""


class NotFound(DomainError):
    """The object does not exist, or belongs to another project (HTTP 404)."""


class Conflict(DomainError):
    """The request collides with the current state (HTTP 409)."""


class Gone(DomainError):
    """What was asked for is no longer kept, such as changes older than the log (HTTP 410)."""


class Unauthenticated(DomainError):
    """No credential, or one that is not valid (HTTP 401)."""


class Forbidden(DomainError):
    """The credential is valid but may not do this (HTTP 403)."""


class QuotaExceeded(Forbidden):
    """The project would go over one of its quotas (HTTP 403, with the quota named)."""


class RateLimited(DomainError):
    """Too many requests from one credential (HTTP 429); `retry_after` in whole seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unreadable(DomainError):
    """Stored data the server cannot open, such as a secret sealed under a key it does not
    hold (HTTP 500: the operator must act, the caller cannot)."""


class PayloadTooLarge(DomainError):
    """The request body is over the configured limit (HTTP 413)."""


class UpstreamUnavailable(DomainError):
    """A pull-through needs the upstream registry and it did not answer usably, with nothing
    cached to fall back on (HTTP 503: retry later)."""


class StorageFull(DomainError):
    """No room is left to store the bytes (HTTP 507; Glance answers 413, as it does when its
    store is full). Nothing was kept; the same request works again once there is room."""
