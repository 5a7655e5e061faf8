"""The registry: CAs, devices, certificates and an append-only audit log.

SQLAlchemy 2 + Alembic; a SQLite file by default, PostgreSQL by URL. ``Registry.open(url)``
migrates the database to the newest schema. Callers get frozen records, never ORM objects.
"""

from tether.cloud.registry.errors import (
    AutoRegistrationPolicyError,
    CAExistsError,
    CANotRegisteredError,
    CAStateError,
    CertificateExistsError,
    CertificateIssuerMismatchError,
    CertificateNotFoundError,
    CertificateStateError,
    ConcurrentChangeError,
    DatabaseUnavailableError,
    DatabaseURLError,
    DeviceExistsError,
    DeviceNotFoundError,
    InvalidRegistryInputError,
    NotACAError,
    SchemaVersionError,
)
from tether.cloud.registry.records import (
    AuditEntry,
    CARecord,
    CARole,
    CAStatus,
    CertificateRecord,
    CertState,
    ConnectionVerdict,
    DeviceRecord,
    DeviceStatus,
    Page,
    Provisioning,
    VerdictCode,
)
from tether.cloud.registry.registry import (
    Registry,
    certificate_fingerprint,
    device_serial_from_certificate,
)

__all__ = [
    "AuditEntry",
    "AutoRegistrationPolicyError",
    "CAExistsError",
    "CANotRegisteredError",
    "CARecord",
    "CARole",
    "CAStateError",
    "CAStatus",
    "CertState",
    "CertificateExistsError",
    "CertificateIssuerMismatchError",
    "CertificateNotFoundError",
    "CertificateRecord",
    "CertificateStateError",
    "ConcurrentChangeError",
    "ConnectionVerdict",
    "DatabaseURLError",
    "DatabaseUnavailableError",
    "DeviceExistsError",
    "DeviceNotFoundError",
    "DeviceRecord",
    "DeviceStatus",
    "InvalidRegistryInputError",
    "NotACAError",
    "Page",
    "Provisioning",
    "Registry",
    "SchemaVersionError",
    "VerdictCode",
    "certificate_fingerprint",
    "device_serial_from_certificate",
]
