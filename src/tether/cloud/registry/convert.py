"""Row to record: the one place an ORM row becomes the frozen value object callers get.

The API's schemas are built from these records (``api/schemas.py``), never from rows, so a
record's shape is written here and in ``records.py`` only.
"""

from __future__ import annotations

import json
from types import MappingProxyType

from cryptography import x509

from tether.cloud.registry.models import (
    AdminModel,
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


def ca_record(m: CAModel) -> CARecord:
    """A CA row as a record."""
    return CARecord(
        fingerprint=m.fingerprint,
        subject=m.subject,
        subject_key_id=m.subject_key_id,
        role=CARole(m.role),
        status=CAStatus(m.status),
        allow_auto_registration=m.allow_auto_registration,
        not_before=m.not_before,
        not_after=m.not_after,
        pem=m.pem,
        created_at=m.created_at,
        updated_at=m.updated_at,
    )


def admin_record(m: AdminModel) -> AdminRecord:
    """An admin row as a record (the hash and salt, never a token)."""
    return AdminRecord(
        name=m.name,
        token_id=m.token_id,
        salt=m.salt,
        token_hash=m.token_hash,
        created_at=m.created_at,
        status=AdminStatus(m.status),
        revoked_at=m.revoked_at,
    )


def code_record(m: RegistrationCodeModel) -> RegistrationCodeRecord:
    """A registration-code row as a record."""
    return RegistrationCodeRecord(
        code=m.code,
        created_by=m.created_by,
        created_at=m.created_at,
        expires_at=m.expires_at,
        used_at=m.used_at,
    )


def device_record(m: DeviceModel) -> DeviceRecord:
    """A device row as a record; its CA by fingerprint."""
    return DeviceRecord(
        serial=m.serial,
        status=DeviceStatus(m.status),
        provisioning=Provisioning(m.provisioning),
        ca_fingerprint=None if m.ca is None else m.ca.fingerprint,
        first_seen=m.first_seen,
        last_seen=m.last_seen,
        created_at=m.created_at,
        updated_at=m.updated_at,
    )


def cert_record(m: CertificateModel) -> CertificateRecord:
    """A certificate row as a record; issuer and device by their keys."""
    return CertificateRecord(
        fingerprint=m.fingerprint,
        serial_number=m.serial_number,
        subject=m.subject,
        issuer_fingerprint=m.issuer.fingerprint,
        device_serial=None if m.device is None else m.device.serial,
        not_before=m.not_before,
        not_after=m.not_after,
        state=CertState(m.state),
        revocation_reason=(
            None if m.revocation_reason is None else x509.ReasonFlags(m.revocation_reason)
        ),
        revoked_at=m.revoked_at,
        pem=m.pem,
        created_at=m.created_at,
        updated_at=m.updated_at,
    )


def audit_entry(m: AuditModel) -> AuditEntry:
    """An audit row as a record; its details read-only."""
    return AuditEntry(
        id=m.id,
        at=m.at,
        actor=m.actor,
        action=m.action,
        target=m.target,
        details=MappingProxyType(json.loads(m.details)),
    )
