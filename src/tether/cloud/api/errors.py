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
