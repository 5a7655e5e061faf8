"""CAs: registration (by an operator, or by its owner with a registration code), status.

A registered CA is a certificate, never a key. Registration refuses a leaf, a root and a CA
whose own certificate (OU ``tether:<role>``, extendedKeyUsage) says it is for something else.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import case, select
from sqlalchemy.orm import Session

from tether.cloud.registry.audit import AuditAction, change_status, write_audit
from tether.cloud.registry.base import (
    RegistryBase,
    check_actor,
    check_fingerprint,
    check_serial,
    flush_or,
    load_one,
)
from tether.cloud.registry.convert import ca_record, code_record
from tether.cloud.registry.errors import (
    AutoRegistrationPolicyError,
    CAExistsError,
    CANotRegisteredError,
    CARoleMismatchError,
    CAStateError,
    ConcurrentChangeError,
    InvalidRegistryInputError,
    NotACAError,
    RegistrationCodeError,
)
from tether.cloud.registry.models import CAModel, RegistrationCodeModel
from tether.cloud.registry.records import CARecord, CARole, CAStatus, RegistrationCodeRecord
from tether.errors import TetherError
from tether.pki.loading import sha256_fingerprint
from tether.pki.names import ROLE_PURPOSE, SERIAL_PATTERN, Role, role_of

AUTO_REGISTRATION_ROLES = frozenset({CARole.DEVICE, CARole.FACTORY})


class CAs(RegistryBase):
    """The CAs the registry trusts for client certificates."""

    def register_ca(
        self,
        cert: x509.Certificate,
        *,
        role: CARole,
        allow_auto_registration: bool = False,
        actor: str,
    ) -> CARecord:
        """Register a CA certificate (not its key: the registry never holds one).

        Raises NotACAError unless basicConstraints says CA, AutoRegistrationPolicyError when
        auto-registration is asked for a server or service CA, CAExistsError when it is
        already registered.
        """
        actor = check_actor(actor)
        role = _check_ca_certificate(cert, CARole(role), allow_auto_registration)
        now = self._clock()
        with self._write() as session:
            return ca_record(_insert_ca(session, cert, role, allow_auto_registration, actor, now))

    def get_ca(self, fingerprint: str) -> CARecord:
        """The CA with this SHA-256 fingerprint. Raises CANotRegisteredError."""
        fingerprint = check_fingerprint(fingerprint)
        with self._read() as session:
            return ca_record(load_ca(session, fingerprint))

    def find_ca_by_subject_key_id(self, ski: bytes) -> CARecord | None:
        """The CA whose subject key identifier is ``ski`` (a leaf's authority key id).

        Several registrations may share a key (a renewed CA certificate); an active one wins,
        then the newest.
        """
        with self._read() as session:
            model = session.scalars(
                select(CAModel)
                .where(CAModel.subject_key_id == bytes(ski))
                .order_by(
                    case((CAModel.status == CAStatus.ACTIVE.value, 0), else_=1),
                    CAModel.id.desc(),
                )
                .limit(1)
            ).first()
            return None if model is None else ca_record(model)

    def list_cas(self, *, status: CAStatus | None = None) -> list[CARecord]:
        """All registered CAs (optionally only those with ``status``), oldest first."""
        stmt = select(CAModel).order_by(CAModel.id)
        if status is not None:
            stmt = stmt.where(CAModel.status == CAStatus(status).value)
        with self._read() as session:
            return [ca_record(m) for m in session.scalars(stmt)]

    def set_ca_status(self, fingerprint: str, status: CAStatus, *, actor: str) -> CARecord:
        """Activate, deactivate or revoke a CA. Revocation is final (CAStateError after it).

        Setting the status it already has changes nothing and writes no audit row.
        """
        actor = check_actor(actor)
        status = CAStatus(status)
        fingerprint = check_fingerprint(fingerprint)
        now = self._clock()
        with self._write() as session:
            model = load_ca(session, fingerprint)
            if model.status == CAStatus.REVOKED and status != CAStatus.REVOKED:
                raise CAStateError(
                    f"The CA {fingerprint} is revoked and stays revoked; register a new CA."
                )
            change_status(
                session, model, "status", status,
                now=now, actor=actor, action=AuditAction.CA_STATUS, target=fingerprint,
            )  # fmt: skip
            return ca_record(model)

    def set_ca_auto_registration(self, fingerprint: str, allow: bool, *, actor: str) -> CARecord:
        """Allow or forbid unknown devices under this CA to self-register on first connect.

        Raises AutoRegistrationPolicyError for server and service CAs.
        """
        actor = check_actor(actor)
        fingerprint = check_fingerprint(fingerprint)
        now = self._clock()
        with self._write() as session:
            model = load_ca(session, fingerprint)
            if allow and CARole(model.role) not in AUTO_REGISTRATION_ROLES:
                raise AutoRegistrationPolicyError(
                    f"Only device and factory CAs may let unknown devices self-register, not "
                    f"a {model.role} CA."
                )
            if model.allow_auto_registration == allow:
                return ca_record(model)
            model.allow_auto_registration = allow
            model.updated_at = now
            write_audit(
                session, now, actor, AuditAction.CA_AUTO_REGISTRATION, fingerprint,
                {"allow": allow},
            )  # fmt: skip
            return ca_record(model)

    # -- registration by the CA's owner, with a single-use code ----------------------------

    def create_registration_code(
        self, code: str, *, expires_at: datetime, actor: str
    ) -> RegistrationCodeRecord:
        """Store a fresh CA registration code (the caller makes it random); audited.

        ``code`` must look like a serial (it becomes a certificate CN).
        """
        actor = check_actor(actor)
        code = check_serial(code)
        if expires_at.tzinfo is None:
            raise InvalidRegistryInputError("expires_at must be an aware datetime (UTC).")
        now = self._clock()
        with self._write() as session:
            model = RegistrationCodeModel(
                code=code, created_by=actor, created_at=now, expires_at=expires_at, used_at=None
            )
            session.add(model)
            taken = "That registration code exists; retry."
            flush_or(session, lambda: ConcurrentChangeError(taken))
            write_audit(
                session,
                now,
                actor,
                AuditAction.CA_REGISTRATION_CODE,
                code,
                {"expires_at": expires_at.isoformat()},
            )
            return code_record(model)

    def register_ca_with_code(
        self,
        cert: x509.Certificate,
        *,
        code: str,
        role: CARole,
        allow_auto_registration: bool = False,
        actor: str,
    ) -> CARecord:
        """Register a CA and spend its registration code, in one transaction.

        The caller has checked the proof of possession (a verification certificate with
        CN=``code`` signed by ``cert``'s key). RegistrationCodeError when the code is unknown,
        used or expired; the code stays unspent when registration is refused.
        """
        actor = check_actor(actor)
        role = _check_ca_certificate(cert, CARole(role), allow_auto_registration)
        if not isinstance(code, str) or not SERIAL_PATTERN.fullmatch(code):
            raise RegistrationCodeError("The registration code is not valid; ask for a new one.")
        now = self._clock()
        with self._write() as session:
            row = session.scalars(
                select(RegistrationCodeModel).where(RegistrationCodeModel.code == code)
            ).first()
            if row is None:
                raise RegistrationCodeError(
                    "Unknown registration code; ask the cloud for one (POST "
                    "/api/v1/cas/registration-codes)."
                )
            if row.used_at is not None:
                raise RegistrationCodeError(
                    "This registration code was already used; ask for a new one."
                )
            if row.expires_at <= now:
                raise RegistrationCodeError(
                    f"This registration code expired at {row.expires_at:%Y-%m-%d %H:%M:%SZ}; "
                    "ask for a new one."
                )
            row.used_at = now
            model = _insert_ca(session, cert, role, allow_auto_registration, actor, now)
            return ca_record(model)


def load_ca(session: Session, fingerprint: str) -> CAModel:
    """The CA row with this fingerprint; CANotRegisteredError if there is none."""
    return load_one(
        session,
        CAModel,
        CAModel.fingerprint == fingerprint,
        lambda: CANotRegisteredError(
            f"No CA with fingerprint {fingerprint} is registered; register it first."
        ),
    )


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s key signed ``cert`` (no other check)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _subject_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _check_ca_certificate(cert: x509.Certificate, role: CARole, allow_jit: bool) -> CARole:
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise NotACAError(
            f"{cert.subject.rfc4514_string()} is not a CA certificate (basicConstraints "
            "CA:TRUE is missing); register the issuing CA, not a leaf."
        )
    if allow_jit and role not in AUTO_REGISTRATION_ROLES:
        raise AutoRegistrationPolicyError(
            f"Only device and factory CAs may let unknown devices self-register, not a "
            f"{role.value} CA; register it without auto-registration."
        )
    _check_role_fits(cert, role)
    return role


def _check_role_fits(cert: x509.Certificate, role: CARole) -> None:
    """Refuse a CA whose own certificate says it is for something else (nothing is written).

    A root is never registered (it signs issuing CAs, not leaves); a Tether CA's
    ``OU=tether:<role>`` must be the role asked for; an extendedKeyUsage, when present, must
    include the role's purpose (``names.ROLE_PURPOSE``), so a server CA cannot become a
    client CA. A third-party CA with neither OU nor EKU fits any client role.
    """
    subject = cert.subject.rfc4514_string()
    if cert.issuer == cert.subject and signed_by(cert, cert):
        raise CARoleMismatchError(
            f"{subject} is a self-signed root; register the issuing CA it signed, never the "
            "root itself (a root vouches for CAs, not for devices or services)."
        )
    try:
        own_role: Role | None = role_of(cert)
    except TetherError:
        own_role = None
    if own_role is not None and own_role != role:
        raise CARoleMismatchError(
            f"{subject} is a {own_role.value} issuing CA (its OU says so); it cannot be "
            f"registered as a {role.value} CA."
        )
    try:
        purposes = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return
    if ROLE_PURPOSE[role] not in purposes:
        raise CARoleMismatchError(
            f"{subject} may vouch only for {', '.join(p._name for p in purposes)} (its "
            f"extendedKeyUsage), not for what a {role.value} CA issues."
        )


def _insert_ca(
    session: Session,
    cert: x509.Certificate,
    role: CARole,
    allow_auto_registration: bool,
    actor: str,
    now: datetime,
) -> CAModel:
    fingerprint = sha256_fingerprint(cert)
    if session.scalar(select(CAModel.id).where(CAModel.fingerprint == fingerprint)):
        raise CAExistsError(f"The CA {fingerprint} is already registered.")
    model = CAModel(
        fingerprint=fingerprint,
        subject=cert.subject.rfc4514_string(),
        subject_key_id=_subject_key_id(cert),
        role=role.value,
        status=CAStatus.ACTIVE.value,
        allow_auto_registration=allow_auto_registration,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        pem=cert.public_bytes(Encoding.PEM).decode("ascii"),
        created_at=now,
        updated_at=now,
    )
    session.add(model)
    flush_or(session, lambda: CAExistsError(f"The CA {fingerprint} is registered."))
    write_audit(
        session,
        now,
        actor,
        AuditAction.CA_REGISTER,
        fingerprint,
        {
            "subject": model.subject,
            "role": role.value,
            "allow_auto_registration": allow_auto_registration,
        },
    )
    return model
