"""Row to record: the one place a database row becomes the frozen value object callers get.

A record's fields are read from the row by name (``_record``); each converter names only
what differs: enum columns become enums, relations become the related row's key, the audit
details are parsed. The API's schemas read records the same way (``api/schemas.py``), so a
record's shape is written once, in ``records.py``.
"""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TypeVar

from cryptography import x509

from tether.cloud.registry.models import (
    AuditModel,
    CAModel,
    CertificateModel,
    DeviceModel,
    RegistrationCodeModel,
)
from tether.cloud.registry.records import (
    AdminRecord,
    AdminStatus,
    AuditEntry,
    CARecord,
    CARole,
    CAStatus,
    CertificateRecord,
    CertState,
    DeviceRecord,
    DeviceStatus,
    Provisioning,
    RegistrationCodeRecord,
)

_R = TypeVar("_R")


def _record(cls: type[_R], row: Any, **derived: Any) -> _R:
    """``cls`` from the same-named attributes of ``row``, except those given in ``derived``."""
    return cls(
        **{
            f.name: derived[f.name] if f.name in derived else getattr(row, f.name)
            for f in fields(cls)  # type: ignore[arg-type]
        }
    )


def ca_record(m: CAModel) -> CARecord:
    """A CA row as a record."""
    return _record(CARecord, m, role=CARole(m.role), status=CAStatus(m.status))


def admin_record(m: Any) -> AdminRecord:
    """An admin row (ORM or a Core row of the same columns) as a record; never a token."""
    return _record(
        AdminRecord,
        m,
        salt=bytes(m.salt),
        token_hash=bytes(m.token_hash),
        status=AdminStatus(m.status),
        created_at=_as_utc(m.created_at),
        revoked_at=None if m.revoked_at is None else _as_utc(m.revoked_at),
    )


def code_record(m: RegistrationCodeModel) -> RegistrationCodeRecord:
    """A registration-code row as a record."""
    return _record(RegistrationCodeRecord, m)


def device_record(m: DeviceModel) -> DeviceRecord:
    """A device row as a record; its CA by fingerprint."""
    return _record(
        DeviceRecord,
        m,
        status=DeviceStatus(m.status),
        provisioning=Provisioning(m.provisioning),
        ca_fingerprint=None if m.ca is None else m.ca.fingerprint,
    )


def cert_record(m: CertificateModel) -> CertificateRecord:
    """A certificate row as a record; issuer and device by their keys."""
    reason = m.revocation_reason
    return _record(
        CertificateRecord,
        m,
        issuer_fingerprint=m.issuer.fingerprint,
        device_serial=None if m.device is None else m.device.serial,
        state=CertState(m.state),
        revocation_reason=None if reason is None else x509.ReasonFlags(reason),
    )


def audit_entry(m: AuditModel) -> AuditEntry:
    """An audit row as a record; its details parsed and read-only."""
    return _record(AuditEntry, m, details=MappingProxyType(json.loads(m.details)))


def _as_utc(value: datetime) -> datetime:
    """A datetime read through Core (UTCDateTime applies; this only guards a naive one)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
