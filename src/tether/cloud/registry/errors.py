"""Errors of the registry, each under one category of :mod:`tether.errors`.

Codes are stable: the API maps them to HTTP statuses and scripts match on them. A refusal
that is also a connection verdict uses the verdict's code (``VerdictCode``), not a copy of it.
"""

from __future__ import annotations

from tether.cloud.registry.records import VerdictCode
from tether.errors import (
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PolicyViolationError,
    StorageError,
)


class CANotRegisteredError(NotFoundError):
    """No CA with this fingerprint is registered."""

    code = VerdictCode.CA_NOT_REGISTERED


class CAExistsError(ConflictError):
    """This CA certificate is already registered."""

    code = "ca_exists"


class CAStateError(ConflictError):
    """The CA is in a state that forbids the action (a revoked CA stays revoked)."""

    code = "ca_state_conflict"


class NotACAError(PolicyViolationError):
    """The certificate offered as a CA is not a CA certificate."""

    code = "not_a_ca_certificate"


class AutoRegistrationPolicyError(PolicyViolationError):
    """Just-in-time registration was asked of a CA that does not allow it."""

    code = "auto_registration_not_allowed"


class DeviceNotFoundError(NotFoundError):
    """No device with this serial is registered."""

    code = "device_not_found"


class DeviceExistsError(ConflictError):
    """A device with this serial is already registered."""

    code = "device_exists"


class CertificateNotFoundError(NotFoundError):
    """No certificate with this fingerprint is registered."""

    code = "certificate_not_found"


class CertificateExistsError(ConflictError):
    """The certificate, or another one with its serial under the same issuer, is registered."""

    code = "certificate_exists"


class CertificateStateError(ConflictError):
    """The certificate is in a state that forbids the action (revocation is final)."""

    code = "certificate_state_conflict"


class CertificateIssuerMismatchError(InvalidInputError):
    """The certificate was not signed by the CA named as its issuer."""

    code = "certificate_issuer_mismatch"


class ConcurrentChangeError(ConflictError):
    """A concurrent writer changed the same rows first; nothing was changed, retry."""

    code = "concurrent_change"


class InvalidRegistryInputError(InvalidInputError):
    """An argument (serial, fingerprint, actor, page, detail) was refused; nothing changed."""

    code = "invalid_registry_input"


class DatabaseURLError(ConfigurationError):
    """The database URL cannot be used."""

    code = "invalid_database_url"


class SchemaVersionError(ConfigurationError):
    """The database schema is at a revision this version of Tether does not know."""

    code = "unknown_schema_revision"


class DatabaseUnavailableError(StorageError):
    """The database could not be reached or refused a read or write."""

    code = "database_unavailable"


class AdminExistsError(ConflictError):
    """An administrator with this name is already registered."""

    code = "admin_exists"


class RegistrationCodeError(PolicyViolationError):
    """A CA registration code is unknown, already used or expired."""

    code = "registration_code_invalid"


class SerialBoundError(ConflictError):
    """The serial belongs to another CA: only the CA that first vouched for it may (invariant 11).

    Moving a device to another CA is an explicit admin action (``rebind_device``).
    """

    code = VerdictCode.SERIAL_BOUND_TO_OTHER_CA


class CertificateListedOnCRLError(PolicyViolationError):
    """The certificate's serial number is on a CRL its issuer published: it is revoked."""

    code = VerdictCode.CERTIFICATE_REVOKED


class CRLApplicationError(InvalidInputError):
    """A CRL does not belong to the CA it was uploaded for, or cannot be applied."""

    code = "crl_invalid"


class CARoleMismatchError(PolicyViolationError):
    """A CA certificate does not fit the role it is being registered for."""

    code = "ca_role_mismatch"


class AdminNotFoundError(NotFoundError):
    """No administrator with this name is registered."""

    code = "admin_not_found"


class AdminStateError(ConflictError):
    """The administrator cannot change this way (already revoked, or the last active one)."""

    code = "admin_state"
