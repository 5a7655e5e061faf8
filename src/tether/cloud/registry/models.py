"""ORM tables of the registry (SQLAlchemy 2 typed declarative); private to the package.

The schema itself is owned by the Alembic migrations in ``migrations/versions``; these
classes must describe the same tables (a test compares them). Enum columns are plain
strings with CHECK constraints, so SQLite and PostgreSQL store the same thing. There is
deliberately no column for a private key anywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from tether.cloud.registry.records import (
    AdminStatus,
    CARole,
    CAStatus,
    CertState,
    DeviceStatus,
    Provisioning,
)

# Stable constraint names, so migrations on SQLite and PostgreSQL name things the same way.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Store naive UTC, hand back aware UTC: the same on SQLite and PostgreSQL."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes (their zone is a guess) and normalise to UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the registry; pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to what the database returns."""
        return None if value is None else value.replace(tzinfo=UTC)


def _values_check(column: str, enum: type[StrEnum]) -> str:
    values = ", ".join(f"'{member.value}'" for member in enum)
    return f"{column} IN ({values})"


class Base(DeclarativeBase):
    """Declarative base with the shared naming convention."""

    metadata = MetaData(naming_convention=NAMING)


class CAModel(Base):
    """A registered CA certificate."""

    __tablename__ = "cas"
    __table_args__ = (
        CheckConstraint(_values_check("role", CARole), name="role"),
        CheckConstraint(_values_check("status", CAStatus), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    subject: Mapped[str] = mapped_column(Text)
    subject_key_id: Mapped[bytes | None] = mapped_column(LargeBinary(64), index=True)
    role: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    allow_auto_registration: Mapped[bool] = mapped_column(Boolean)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)
    not_after: Mapped[datetime] = mapped_column(UTCDateTime)
    pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DeviceModel(Base):
    """A registered device, keyed by its serial (the subject of its certificates)."""

    __tablename__ = "devices"
    __table_args__ = (
        CheckConstraint(_values_check("status", DeviceStatus), name="status"),
        CheckConstraint(_values_check("provisioning", Provisioning), name="provisioning"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    serial: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    provisioning: Mapped[str] = mapped_column(String(16))
    # The CA this serial belongs to: the first CA that vouched for it (invariant 11). Only an
    # explicit, audited rebind moves it; NULL until the device's first certificate.
    ca_id: Mapped[int | None] = mapped_column(ForeignKey("cas.id", ondelete="RESTRICT"), index=True)
    first_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    ca: Mapped[CAModel | None] = relationship(lazy="joined")


class CertificateModel(Base):
    """A certificate the registry knows, with its lifecycle state.

    Serial numbers are unique per issuer (RFC 5280 4.1.2.2): that is what a CRL names, and
    vendor factory CAs may well count from 1, so a global constraint would refuse valid
    certificates.
    """

    __tablename__ = "certificates"
    __table_args__ = (
        UniqueConstraint("issuer_id", "serial_number", name="uq_certificates_issuer_serial"),
        CheckConstraint(_values_check("state", CertState), name="state"),
        Index("ix_certificates_issuer_state", "issuer_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    serial_number: Mapped[str] = mapped_column(String(48))
    subject: Mapped[str] = mapped_column(Text)
    issuer_id: Mapped[int] = mapped_column(ForeignKey("cas.id", ondelete="RESTRICT"))
    device_id: Mapped[int | None] = mapped_column(
        ForeignKey("devices.id", ondelete="RESTRICT"), index=True
    )
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)
    not_after: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16))
    revocation_reason: Mapped[str | None] = mapped_column(String(32))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    issuer: Mapped[CAModel] = relationship(lazy="joined", innerjoin=True)
    device: Mapped[DeviceModel | None] = relationship(lazy="joined")


class AuditModel(Base):
    """One append-only audit row; the database refuses UPDATE and DELETE (see migration)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200), index=True)
    details: Mapped[str] = mapped_column(Text)


class AdminModel(Base):
    """An administrator of the API: a name and the scrypt hash of its token, never the token."""

    __tablename__ = "admins"
    __table_args__ = (CheckConstraint(_values_check("status", AdminStatus), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[str] = mapped_column(String(32), unique=True)
    salt: Mapped[bytes] = mapped_column(LargeBinary(32))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), server_default=AdminStatus.ACTIVE.value)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RegistrationCodeModel(Base):
    """A single-use code a CA owner must sign into a verification certificate."""

    __tablename__ = "registration_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PublishedCRLModel(Base):
    """A CRL uploaded by its issuer's owner (the root, or a CA whose key the cloud lacks)."""

    __tablename__ = "published_crls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer: Mapped[str] = mapped_column(String(64), unique=True)
    der: Mapped[bytes] = mapped_column(LargeBinary)
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PolicyModel(Base):
    """A named policy; its documents are the versions (the newest is current)."""

    __tablename__ = "policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    current_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PolicyVersionModel(Base):
    """One version of a policy document (canonical JSON), never changed once written."""

    __tablename__ = "policy_versions"
    __table_args__ = (
        UniqueConstraint("policy_id", "version", name="uq_policy_versions_policy_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))


class PolicyAttachmentModel(Base):
    """A policy attached to a device, a device group, a CA (by fingerprint) or a service."""

    __tablename__ = "policy_attachments"
    __table_args__ = (
        UniqueConstraint(
            "policy_id", "target_kind", "target", name="uq_policy_attachments_policy_target"
        ),
        CheckConstraint("target_kind IN ('device', 'group', 'ca', 'service')", name="kind"),
        Index("ix_policy_attachments_target", "target_kind", "target"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id", ondelete="RESTRICT"))
    target_kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    policy: Mapped[PolicyModel] = relationship(lazy="joined", innerjoin=True)


class DeviceGroupModel(Base):
    """A device's membership of a named group (groups exist by being named)."""

    __tablename__ = "device_groups"
    __table_args__ = (
        UniqueConstraint("device_id", "group_name", name="uq_device_groups_device_group"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    group_name: Mapped[str] = mapped_column(String(64), index=True)

    device: Mapped[DeviceModel] = relationship(lazy="joined", innerjoin=True)


class DeviceAttributeModel(Base):
    """One named attribute of a device (what ``${attr.<name>}`` resolves to)."""

    __tablename__ = "device_attributes"
    __table_args__ = (
        UniqueConstraint("device_id", "name", name="uq_device_attributes_device_name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(32))
    value: Mapped[str] = mapped_column(String(128))

    device: Mapped[DeviceModel] = relationship(lazy="joined", innerjoin=True)


class ClaimModel(Base):
    """A claim: a shared birth certificate that may only enroll, and its policy (issue 16)."""

    __tablename__ = "claims"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    certificate_id: Mapped[int] = mapped_column(
        ForeignKey("certificates.id", ondelete="RESTRICT"), unique=True
    )
    serials: Mapped[str | None] = mapped_column(Text)  # JSON list; NULL: any serial
    max_enrollments: Mapped[int | None] = mapped_column(Integer)
    enrollments: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    certificate: Mapped[CertificateModel] = relationship(lazy="joined", innerjoin=True)


class EnrollmentTokenModel(Base):
    """A one-time enrollment token for one serial: only its SHA-256 is kept."""

    __tablename__ = "enrollment_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    serial: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EnrollmentModel(Base):
    """One distinct enroll request and the certificate it issued (what a retry gets back)."""

    __tablename__ = "enrollments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_digest: Mapped[str] = mapped_column(String(64), unique=True)
    serial: Mapped[str] = mapped_column(String(128), index=True)
    credential: Mapped[str] = mapped_column(String(200))
    result: Mapped[str] = mapped_column(String(16))
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificates.id", ondelete="RESTRICT"))
    attributes: Mapped[str] = mapped_column(Text)  # JSON object the hook set
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    certificate: Mapped[CertificateModel] = relationship(lazy="joined", innerjoin=True)


class CertificateSuccessionModel(Base):
    """Which certificate replaced which, and when the predecessor is retired."""

    __tablename__ = "certificate_successions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    predecessor_id: Mapped[int] = mapped_column(ForeignKey("certificates.id", ondelete="RESTRICT"))
    successor_id: Mapped[int] = mapped_column(
        ForeignKey("certificates.id", ondelete="RESTRICT"), unique=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    retire_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RetainedMessageModel(Base):
    """The retained message of one topic (issue 17; see ``cloud/registry/mqtt_state.py``).

    ``topic_hash`` (SHA-256 of the topic) is the unique key: a topic may be up to 64 KiB,
    too long for a portable unique index on the text itself.
    """

    __tablename__ = "mqtt_retained"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic_hash: Mapped[str] = mapped_column(String(64), unique=True)
    topic: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    qos: Mapped[int] = mapped_column(Integer)
    sender_kind: Mapped[str] = mapped_column(String(16))
    sender_name: Mapped[str] = mapped_column(String(64), index=True)
    user_properties: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expiry_interval: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 0010


class MqttSessionModel(Base):
    """A persistent MQTT session of one identity, kept while it is offline."""

    __tablename__ = "mqtt_sessions"
    __table_args__ = (UniqueConstraint("kind", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    subscriptions: Mapped[str] = mapped_column(Text)
    qos2_received: Mapped[str] = mapped_column(Text)  # JSON list of packet identifiers
    # What the session was made under (0011; NULL before): a revocation matches on these.
    certificate_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    issuer_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True)


class MqttQueuedModel(Base):
    """One QoS 1/2 message queued for an offline persistent session, oldest first by id."""

    __tablename__ = "mqtt_queued"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(
        ForeignKey("mqtt_sessions.id", ondelete="CASCADE"), index=True
    )
    topic: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    qos: Mapped[int] = mapped_column(Integer)
    sender_kind: Mapped[str] = mapped_column(String(16))
    sender_name: Mapped[str] = mapped_column(String(64))
    user_properties: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expiry_interval: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 0010
