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


class OnlineCANotConfiguredError(ConfigurationError):
    """Console provisioning and CSR signing need the online device CA, which is not set up."""

    code = "online_ca_not_configured"


class OnlineCAInactiveError(ConflictError):
    """The online device CA is not active in the registry; what it signs would be refused."""

    code = "online_ca_inactive"


class CRLNotAvailableError(NotFoundError):
    """No CRL can be served for this issuer (no key here and none uploaded)."""

    code = "crl_not_available"


class CRLRejectedError(PolicyViolationError):
    """An uploaded CRL is not signed by the issuer it is uploaded for."""

    code = "crl_rejected"


class CRLSignedHereError(ConflictError):
    """The cloud signs this CA's CRL itself; an uploaded one would contradict the registry."""

    code = "crl_signed_by_cloud"
