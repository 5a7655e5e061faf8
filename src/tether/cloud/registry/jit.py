"""Just-in-time registration: an unknown device under a CA that allows it, on first connect.

This is the gateway's write (not an admin's): it runs on the handshake path, is idempotent,
and retries a unique-constraint race against a concurrent registration of the same device.
"""

from __future__ import annotations

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from tether.cloud.registry.audit import AuditAction, write_audit
from tether.cloud.registry.base import RegistryBase, check_actor, check_fingerprint, check_serial
from tether.cloud.registry.cas import load_ca
from tether.cloud.registry.certificates import (
    DuplicateFingerprintError,
    certificate_fingerprint,
    check_issued_by,
    insert_certificate,
)
from tether.cloud.registry.convert import cert_record, device_record
from tether.cloud.registry.devices import bind, bound_elsewhere, new_device
from tether.cloud.registry.errors import (
    AutoRegistrationPolicyError,
    CAStateError,
    CertificateExistsError,
    DatabaseUnavailableError,
)
from tether.cloud.registry.models import CertificateModel, DeviceModel
from tether.cloud.registry.records import (
    CAStatus,
    CertificateRecord,
    CertState,
    DeviceRecord,
    Provisioning,
)


class _JITRaceError(Exception):
    """A unique constraint fired under a concurrent writer; the caller retries or reports."""


class JustInTime(RegistryBase):
    """Self-registration of unknown devices on first connect."""

    def register_device_just_in_time(
        self,
        cert: x509.Certificate,
        *,
        device_serial: str,
        issuer_fingerprint: str,
        actor: str = "gateway",
    ) -> tuple[DeviceRecord, CertificateRecord]:
        """Register an unknown device and its certificate on first connect, atomically.

        Only under an active CA that allows auto-registration (CAStateError,
        AutoRegistrationPolicyError otherwise), and only for a certificate that CA signed.
        Idempotent: if the certificate is already registered for this device, the existing
        records come back and nothing is written, also when two connections race. JIT only
        creates a device; an existing one gains the certificate (a renewal) only if it belongs
        to this CA, else SerialBoundError (invariant 11). A serial number on the CA's
        published CRL is CertificateListedOnCRLError. The device keeps its status.
        """
        actor = check_actor(actor)
        serial = check_serial(device_serial)
        issuer_fingerprint = check_fingerprint(issuer_fingerprint)
        fingerprint = certificate_fingerprint(cert)
        # A concurrent registration can win between our read and our insert on PostgreSQL
        # (READ COMMITTED); the unique constraints catch it and the retry sees its rows.
        for attempt in range(3):
            try:
                return self._jit_once(cert, serial, issuer_fingerprint, fingerprint, actor)
            except _JITRaceError:
                if attempt == 2:
                    raise DatabaseUnavailableError(
                        f"Just-in-time registration of {serial!r} kept conflicting with "
                        "concurrent writes; retry the connection."
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _jit_once(
        self, cert: x509.Certificate, serial: str, issuer: str, fingerprint: str, actor: str
    ) -> tuple[DeviceRecord, CertificateRecord]:
        now = self._clock()
        with self._write() as session:
            ca = load_ca(session, issuer)
            if ca.status != CAStatus.ACTIVE.value:
                raise CAStateError(f"The CA {issuer} is {ca.status}; it cannot admit devices.")
            if not ca.allow_auto_registration:
                raise AutoRegistrationPolicyError(
                    f"The CA {issuer} does not allow unknown devices to self-register; "
                    "register the device first or allow auto-registration on the CA."
                )
            check_issued_by(cert, ca)
            existing = session.scalars(
                select(CertificateModel).where(CertificateModel.fingerprint == fingerprint)
            ).first()
            if existing is not None:
                if existing.device is None or existing.device.serial != serial:
                    raise CertificateExistsError(
                        f"The certificate {fingerprint} is registered for another device."
                    )
                return device_record(existing.device), cert_record(existing)
            device = session.scalars(
                select(DeviceModel).where(DeviceModel.serial == serial)
            ).first()
            created = device is None
            if device is None:
                device = new_device(serial, Provisioning.JIT, now)
                session.add(device)
            elif device.ca_id != ca.id:
                # JIT only ever creates a device, or renews one under the CA it belongs to.
                raise bound_elsewhere(serial, device, ca)
            bind(device, ca)
            try:
                model = insert_certificate(session, cert, ca, device, CertState.ACTIVE, now)
            except (DuplicateFingerprintError, IntegrityError) as exc:
                # We checked for this certificate above: a concurrent registration won. Under
                # READ COMMITTED (PostgreSQL) its commit is visible now; retry to return it.
                raise _JITRaceError from exc
            write_audit(
                session,
                now,
                actor,
                AuditAction.DEVICE_REGISTER_JIT,
                serial,
                {"certificate": fingerprint, "issuer": issuer, "device_created": created},
            )
            return device_record(device), cert_record(model)
