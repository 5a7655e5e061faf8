"""Errors of the admin API and the one place TetherError codes become HTTP statuses.

Every refusal leaves the API as ``{"code": ..., "message": ...}`` with the status that
:func:`status_for` picks from the error's category; nothing else in the API chooses a status
for a TetherError.
"""

from __future__ import annotations

from tether.errors import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    PolicyViolationError,
    StorageError,
    TetherError,
)


class LimitExceededError(PermissionDeniedError):
    """A bound of the API acted (issue 14): not now, or not this big. Carries its own status.

    ``status`` is 413, 429 or 503; ``retry_after`` (seconds, or None) becomes a
    ``Retry-After`` header. A PermissionDeniedError by category: the caller is refused for a
    while, nothing about the request's content is wrong (except its size) and nothing changed.
    """

    code = "api_limit_exceeded"
    status = 429

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimitedError(LimitExceededError):
    """This address started too many scrypt token checks; wait ``retry_after`` seconds."""

    code = "api_rate_limited"
    status = 429


class AuthThrottledError(LimitExceededError):
    """This address sent too many failed credentials in the window; wait for its end."""

    code = "api_auth_throttled"
    status = 429


class TokenLaneFullError(LimitExceededError):
    """Every slot of the token-check lane is taken; retry in a moment."""

    code = "api_token_lane_full"
    status = 503


class BodyTooLargeError(LimitExceededError):
    """The request body is over the API's limit (refused before it is read)."""

    code = "api_body_too_large"
    status = 413


# Most specific category first: PolicyViolationError is an InvalidInputError.
_STATUSES: tuple[tuple[type[TetherError], int], ...] = (
    (PolicyViolationError, 422),
    (InvalidInputError, 400),
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (ConfigurationError, 503),
    (StorageError, 503),
)


def status_for(error: TetherError) -> int:
    """The HTTP status for ``error``, by its category (500 for anything unforeseen)."""
    if isinstance(error, LimitExceededError):
        return error.status
    for category, status in _STATUSES:
        if isinstance(error, category):
            return status
    return 500
