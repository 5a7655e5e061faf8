"""Certificates: recording what a registered CA signed, state changes, revocation.

A certificate is recorded only if its registered issuer really signed it, its serial number
is new under that issuer and not on the CRL the issuer published; a device it names must
belong to that issuer (``devices.bind``). ``provision_device`` records a new device and its
first certificate in one transaction (console and CSR provisioning).
"""

from __future__ import annotations

import functools
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.cloud.registry.audit import AuditAction, change_status, write_audit
from tether.cloud.registry.base import (
    RegistryBase,
    check_actor,
    check_fingerprint,
    check_page,
    check_serial,
    load_one,
    page_of,
)
from tether.cloud.registry.cas import load_ca
from tether.cloud.registry.convert import cert_record, device_record
from tether.cloud.registry.devices import bind, insert_device, load_device, refuse_taken
from tether.cloud.registry.errors import (
    CertificateExistsError,
    CertificateIssuerMismatchError,
    CertificateListedOnCRLError,
    CertificateNotFoundError,
    CertificateStateError,
    InvalidRegistryInputError,
)
from tether.cloud.registry.models import (
    CAModel,
    CertificateModel,
    DeviceModel,
    PublishedCRLModel,
)
from tether.cloud.registry.records import (
    CertificateRecord,
    CertState,
    DeviceRecord,
    Page,
    Provisioning,
)
from tether.pki.loading import sha256_fingerprint

# The registry's and the gateway's key for a certificate is the PKI's fingerprint: lowercase
# hex SHA-256 of the DER. One definition, so the two can never disagree.
certificate_fingerprint = sha256_fingerprint


def device_serial_from_certificate(cert: x509.Certificate) -> str:
    """The subject CN of a device certificate: a fallback when the caller has no serial.

    Raises InvalidRegistryInputError when there is not exactly one CN.
    """
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if len(cns) != 1 or not isinstance(cns[0].value, str):
        raise InvalidRegistryInputError(
            "The certificate subject has no single common name to take the device serial "
            "from; pass the device serial explicitly."
        )
    return check_serial(cns[0].value)


class Certificates(RegistryBase):
    """The certificates registered CAs signed, and their lifecycle."""

    def add_certificate(
        self,
        cert: x509.Certificate,
        *,
        device_serial: str | None,
        issuer_fingerprint: str,
        state: CertState = CertState.ACTIVE,
        actor: str,
    ) -> CertificateRecord:
        """Record a certificate the CA ``issuer_fingerprint`` signed, for a device or none.

        The signature is checked against the registered CA (CertificateIssuerMismatchError).
        Raises CANotRegisteredError, DeviceNotFoundError, CertificateExistsError (same
        certificate, or same serial number under the same issuer), and refuses ``revoked``
        as a starting state (use :meth:`revoke_certificate`).
        """
        actor = check_actor(actor)
        issuer_fingerprint = check_fingerprint(issuer_fingerprint)
        state = CertState(state)
        if state == CertState.REVOKED:
            raise InvalidRegistryInputError(
                "A certificate cannot be added as revoked; add it, then revoke it with a reason."
            )
        serial = None if device_serial is None else check_serial(device_serial)
        now = self._clock()
        with self._write() as session:
            ca = load_ca(session, issuer_fingerprint)
            check_issued_by(cert, ca)
            device = None if serial is None else load_device(session, serial)
            if device is not None:
                bind(device, ca)
            model = insert_certificate(session, cert, ca, device, state, now)
            _audit_added(session, now, actor, model, issuer_fingerprint, serial, state)
            return cert_record(model)

    def provision_device(
        self,
        serial: str,
        cert: x509.Certificate,
        *,
        issuer_fingerprint: str,
        provisioning: Provisioning,
        actor: str,
    ) -> tuple[DeviceRecord, CertificateRecord]:
        """Register a new device and its first certificate in one transaction.

        All or nothing: DeviceExistsError on a duplicate serial, plus every refusal of
        :meth:`add_certificate`; a refusal leaves neither the device nor the certificate.
        """
        actor = check_actor(actor)
        serial = check_serial(serial)
        issuer_fingerprint = check_fingerprint(issuer_fingerprint)
        provisioning = Provisioning(provisioning)
        now = self._clock()
        with self._write() as session:
            refuse_taken(session, serial)
            ca = load_ca(session, issuer_fingerprint)
            check_issued_by(cert, ca)
            device = insert_device(session, serial, provisioning, actor, now, ca=ca)
            model = insert_certificate(session, cert, ca, device, CertState.ACTIVE, now)
            _audit_added(session, now, actor, model, issuer_fingerprint, serial, CertState.ACTIVE)
            return device_record(device), cert_record(model)

    def get_certificate(self, fingerprint: str) -> CertificateRecord:
        """The certificate with this SHA-256 fingerprint. Raises CertificateNotFoundError."""
        fingerprint = check_fingerprint(fingerprint)
        with self._read() as session:
            return cert_record(_load_cert(session, fingerprint))

    def list_certificates(
        self,
        *,
        device_serial: str | None = None,
        issuer_fingerprint: str | None = None,
        offset: int = 0,
        limit: int = 50,
        serial_number: str | None = None,
    ) -> Page[CertificateRecord]:
        """Certificates in the order they were added, optionally of one device or issuer.

        ``serial_number`` (hex, as ``openssl x509 -serial`` prints it; colons and leading
        zeros ignored) picks certificates by their X.509 serial number, under any issuer.
        """
        check_page(offset, limit)
        stmt = select(CertificateModel)
        if serial_number is not None:
            stmt = stmt.where(
                CertificateModel.serial_number == normalize_serial_number(serial_number)
            )
        if device_serial is not None:
            serial = check_serial(device_serial)
            stmt = stmt.where(
                CertificateModel.device_id
                == select(DeviceModel.id).where(DeviceModel.serial == serial).scalar_subquery()
            )
        if issuer_fingerprint is not None:
            issuer = check_fingerprint(issuer_fingerprint)
            stmt = stmt.where(
                CertificateModel.issuer_id
                == select(CAModel.id).where(CAModel.fingerprint == issuer).scalar_subquery()
            )
        with self._read() as session:
            return page_of(session, stmt, CertificateModel.id, cert_record, offset, limit)

    def set_certificate_state(
        self, fingerprint: str, state: CertState, *, actor: str
    ) -> CertificateRecord:
        """Move a certificate between pending, active and inactive.

        Revocation goes through :meth:`revoke_certificate` and is final
        (CertificateStateError). Setting the current state changes nothing, no audit row.
        """
        actor = check_actor(actor)
        fingerprint = check_fingerprint(fingerprint)
        state = CertState(state)
        if state == CertState.REVOKED:
            raise InvalidRegistryInputError(
                "Use revoke_certificate to revoke: a revocation needs a reason."
            )
        now = self._clock()
        with self._write() as session:
            model = _load_cert(session, fingerprint)
            if model.state == CertState.REVOKED.value:
                raise CertificateStateError(
                    f"The certificate {fingerprint} is revoked and stays revoked; issue a new one."
                )
            change_status(
                session, model, "state", state,
                now=now, actor=actor, action=AuditAction.CERTIFICATE_STATE, target=fingerprint,
            )  # fmt: skip
            return cert_record(model)

    def revoke_certificate(
        self, fingerprint: str, *, reason: x509.ReasonFlags, actor: str
    ) -> CertificateRecord:
        """Revoke a certificate; once this returns the revocation is committed and durable.

        Raises CertificateNotFoundError, CertificateStateError when already revoked, and
        InvalidRegistryInputError for ``remove_from_crl`` (a delta-CRL code, not a reason).
        """
        actor = check_actor(actor)
        fingerprint = check_fingerprint(fingerprint)
        reason = x509.ReasonFlags(reason)
        if reason == x509.ReasonFlags.remove_from_crl:
            raise InvalidRegistryInputError(
                "removeFromCRL is not a revocation reason; revocation is final."
            )
        now = self._clock()
        with self._write() as session:
            model = _load_cert(session, fingerprint)
            if model.state == CertState.REVOKED.value:
                raise CertificateStateError(
                    f"The certificate {fingerprint} was already revoked at "
                    f"{model.revoked_at:%Y-%m-%d %H:%M:%SZ} ({model.revocation_reason})."
                )
            revoke(session, model, reason, now, actor)
            return cert_record(model)

    def revoked_certificates(self, issuer_fingerprint: str) -> list[CertificateRecord]:
        """Every revoked certificate the CA issued, in revocation order (CRL input).

        Raises CANotRegisteredError.
        """
        issuer_fingerprint = check_fingerprint(issuer_fingerprint)
        with self._read() as session:
            ca = load_ca(session, issuer_fingerprint)
            models = session.scalars(
                select(CertificateModel)
                .where(
                    CertificateModel.issuer_id == ca.id,
                    CertificateModel.state == CertState.REVOKED.value,
                )
                .order_by(CertificateModel.revoked_at, CertificateModel.id)
            )
            return [cert_record(m) for m in models]


class DuplicateFingerprintError(CertificateExistsError):
    """The certificate itself (not just its serial number) is already registered."""


def revoke(
    session: Session,
    model: CertificateModel,
    reason: x509.ReasonFlags,
    now: datetime,
    actor: str,
    *,
    source: str | None = None,
) -> None:
    """Mark a certificate revoked with its audit row (``source: crl`` when a CRL did it)."""
    old = model.state
    model.state = CertState.REVOKED.value
    model.revocation_reason = reason.value
    model.revoked_at = now
    model.updated_at = now
    # The audit log names a reason as the API and the CLI take it (key_compromise), not by
    # its RFC 5280 ASN.1 value (keyCompromise): one spelling wherever an operator reads it.
    details = {"reason": reason.name, "from": old, "serial_number": model.serial_number}
    if source is not None:
        details["source"] = source
    write_audit(session, now, actor, AuditAction.CERTIFICATE_REVOKE, model.fingerprint, details)


@functools.lru_cache(maxsize=64)
def _ca_certificate(ca_pem: str) -> x509.Certificate:
    """A CA row's certificate, parsed once (a CA row's PEM never changes)."""
    return x509.load_pem_x509_certificate(ca_pem.encode("ascii"))


def check_issued_by(cert: x509.Certificate, ca: CAModel) -> None:
    """CertificateIssuerMismatchError unless the registered CA ``ca`` signed ``cert``."""
    ca_cert = _ca_certificate(ca.pem)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateIssuerMismatchError(
            f"The certificate {cert.subject.rfc4514_string()} was not signed by the CA "
            f"{ca.fingerprint} ({ca.subject}); name its real issuer."
        ) from exc


def insert_certificate(
    session: Session,
    cert: x509.Certificate,
    ca: CAModel,
    device: DeviceModel | None,
    state: CertState,
    now: datetime,
) -> CertificateModel:
    """Add a certificate row (no audit row: the caller writes the one its action needs)."""
    fingerprint = certificate_fingerprint(cert)
    serial_number = _serial_hex(cert)
    if session.scalar(
        select(CertificateModel.id).where(CertificateModel.fingerprint == fingerprint)
    ):
        raise DuplicateFingerprintError(f"The certificate {fingerprint} is already registered.")
    if session.scalar(
        select(CertificateModel.id).where(
            CertificateModel.issuer_id == ca.id,
            CertificateModel.serial_number == serial_number,
        )
    ):
        raise CertificateExistsError(
            f"The CA {ca.fingerprint} already has a certificate with serial number "
            f"{serial_number}; serial numbers must be unique per issuer."
        )
    published = session.scalar(
        select(PublishedCRLModel.der).where(PublishedCRLModel.issuer == ca.fingerprint)
    )
    if published is not None:
        listed = x509.load_der_x509_crl(published).get_revoked_certificate_by_serial_number(
            cert.serial_number
        )
        if listed is not None:
            raise CertificateListedOnCRLError(
                f"The certificate's serial number {serial_number} is on the CRL its CA "
                f"{ca.fingerprint} published: it is revoked and cannot be registered."
            )
    model = CertificateModel(
        fingerprint=fingerprint,
        serial_number=serial_number,
        subject=cert.subject.rfc4514_string(),
        issuer=ca,
        device=device,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        state=state.value,
        revocation_reason=None,
        revoked_at=None,
        pem=cert.public_bytes(Encoding.PEM).decode("ascii"),
        created_at=now,
        updated_at=now,
    )
    session.add(model)
    session.flush()
    return model


def _audit_added(
    session: Session,
    now: datetime,
    actor: str,
    model: CertificateModel,
    issuer: str,
    serial: str | None,
    state: CertState,
) -> None:
    details = {
        "serial_number": model.serial_number,
        "issuer": issuer,
        "device": serial,
        "state": state.value,
    }
    write_audit(session, now, actor, AuditAction.CERTIFICATE_ADD, model.fingerprint, details)


def _load_cert(session: Session, fingerprint: str) -> CertificateModel:
    return load_one(
        session,
        CertificateModel,
        CertificateModel.fingerprint == fingerprint,
        lambda: CertificateNotFoundError(
            f"No certificate with fingerprint {fingerprint} is registered."
        ),
    )


def normalize_serial_number(text: str) -> str:
    """A certificate serial number as the registry keeps it: lowercase hex, no leading zeros.

    Accepts ``openssl``'s forms (``serial=0A1B...``, ``0a:1b:...``). Raises
    InvalidRegistryInputError for anything that is not hex.
    """
    value = text.strip().lower().removeprefix("serial=").replace(":", "")
    if not value or len(value) > 48 or any(c not in "0123456789abcdef" for c in value):
        raise InvalidRegistryInputError(
            f"{text[:60]!r} is not a certificate serial number (hex, as `openssl x509 -serial` "
            "prints it)."
        )
    return format(int(value, 16), "x")


def _serial_hex(cert: x509.Certificate) -> str:
    if cert.serial_number <= 0:
        raise InvalidRegistryInputError(
            "The certificate's serial number is not positive (RFC 5280 4.1.2.2)."
        )
    return format(cert.serial_number, "x")
