"""Value objects the registry hands out: enums and frozen dataclasses, never ORM objects.

Everything here is safe to pass across threads and layers (gateway, API, CLI): it is
immutable and detached from any database session. Datetimes are timezone-aware UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeAlias, TypeVar

from cryptography import x509

from tether.pki.names import Role

DetailValue: TypeAlias = str | int | bool | None

T = TypeVar("T")


class CAStatus(StrEnum):
    """Lifecycle of a registered CA; only ``active`` CAs vouch for devices."""

    ACTIVE = "active"
    INACTIVE = "inactive"
    REVOKED = "revoked"


# What a registered CA is trusted for: the PKI's one role enum, not a copy of it.
CARole = Role


class DeviceStatus(StrEnum):
    """Whether a device may connect."""

    ENABLED = "enabled"
    DISABLED = "disabled"


class Provisioning(StrEnum):
    """How a device got its identity."""

    FACTORY = "factory"
    CONSOLE = "console"
    CSR = "csr"
    JIT = "jit"


class CertState(StrEnum):
    """Lifecycle of a certificate; ``revoked`` is final."""

    PENDING = "pending"
    ACTIVE = "active"
    INACTIVE = "inactive"
    REVOKED = "revoked"


class AdminStatus(StrEnum):
    """Whether an administrator's token is accepted; ``revoked`` is final."""

    ACTIVE = "active"
    REVOKED = "revoked"


class VerdictCode(StrEnum):
    """Stable reason codes of :class:`ConnectionVerdict` (the gateway logs and maps them)."""

    OK = "ok"
    JIT_ALLOWED = "jit_allowed"
    CA_NOT_REGISTERED = "ca_not_registered"
    CA_INACTIVE = "ca_inactive"
    CERTIFICATE_REVOKED = "certificate_revoked"
    CERTIFICATE_INACTIVE = "certificate_inactive"
    CERTIFICATE_UNKNOWN = "certificate_unknown"
    DEVICE_MISMATCH = "device_mismatch"
    DEVICE_DISABLED = "device_disabled"
    DEVICE_UNKNOWN = "device_unknown"
    SERIAL_BOUND_TO_OTHER_CA = "serial_bound_to_other_ca"


@dataclass(frozen=True, slots=True)
class CARecord:
    """A registered CA. ``pem`` is its certificate (never a key: the registry has none)."""

    fingerprint: str
    subject: str
    subject_key_id: bytes | None
    role: CARole
    status: CAStatus
    allow_auto_registration: bool
    not_before: datetime
    not_after: datetime
    pem: str
    created_at: datetime
    updated_at: datetime

    def certificate(self) -> x509.Certificate:
        """Parse the stored certificate (e.g. to build the gateway's trust store)."""
        return x509.load_pem_x509_certificate(self.pem.encode("ascii"))


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A registered device; ``first_seen``/``last_seen`` are ``None`` until it connects."""

    serial: str
    status: DeviceStatus
    provisioning: Provisioning
    ca_fingerprint: str | None  # the CA the serial belongs to (None until its first cert)
    first_seen: datetime | None
    last_seen: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    """A registered certificate. ``serial_number`` is lowercase hex without leading zeros."""

    fingerprint: str
    serial_number: str
    subject: str
    issuer_fingerprint: str
    device_serial: str | None
    not_before: datetime
    not_after: datetime
    state: CertState
    revocation_reason: x509.ReasonFlags | None
    revoked_at: datetime | None
    pem: str
    created_at: datetime
    updated_at: datetime

    @property
    def serial_int(self) -> int:
        """The serial number as an integer (what a CRL entry needs)."""
        return int(self.serial_number, 16)

    def certificate(self) -> x509.Certificate:
        """Parse the stored certificate."""
        return x509.load_pem_x509_certificate(self.pem.encode("ascii"))


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of the append-only audit log; ``id`` grows with time."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: Mapping[str, DetailValue]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing: ``items`` from ``offset``, at most ``limit``, of ``total``."""

    items: tuple[T, ...]
    total: int
    offset: int
    limit: int

    @property
    def next_offset(self) -> int | None:
        """Offset of the next page, or ``None`` on the last page."""
        nxt = self.offset + len(self.items)
        return nxt if nxt < self.total and self.items else None


@dataclass(frozen=True, slots=True)
class ConnectionVerdict:
    """The registry's answer for one handshake: may this certificate connect as this device?

    ``allowed`` is the only field the gateway must obey; ``reason_code`` is stable for logs
    and metrics, ``reason`` is for people. ``jit_allowed`` means: allowed, and the caller
    must call ``register_device_just_in_time`` before accepting traffic. ``audit_position``
    is the newest audit entry the verdict reflects (read in the same statement): a change
    logged after it may not be reflected, so a caller following the log re-checks those.
    """

    allowed: bool
    reason_code: VerdictCode
    reason: str
    audit_position: int = 0


@dataclass(frozen=True, slots=True)
class AdminRecord:
    """An API administrator: ``salt`` and ``token_hash`` are the scrypt inputs/outputs only."""

    name: str
    token_id: str
    salt: bytes
    token_hash: bytes
    created_at: datetime
    status: AdminStatus = AdminStatus.ACTIVE
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RegistrationCodeRecord:
    """A CA registration code: random, single use, valid until ``expires_at``."""

    code: str
    created_by: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None


@dataclass(frozen=True, slots=True)
class CRLEffect:
    """What applying a published CRL changed: newly revoked certificates and CAs (fingerprints).

    ``not_registered`` counts listed serial numbers the registry holds no certificate for;
    those stay refused because JIT and registration check the published CRL.
    """

    revoked_certificates: tuple[str, ...]
    revoked_cas: tuple[str, ...]
    not_registered: int
