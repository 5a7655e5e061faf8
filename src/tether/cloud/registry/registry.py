"""The registry service: CAs, devices, certificates and the append-only audit log.

Sync by design (the async gateway calls it in a worker thread). Every mutating method runs
in one transaction that also writes its audit row, so a change without its audit row (or
the reverse) cannot be committed. Methods either succeed completely or raise a TetherError
and change nothing. Nothing here prints or reads the environment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import Engine, Select, String, bindparam, case, func, literal, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from tether.cloud.registry import migrate
from tether.cloud.registry.engine import (
    BEGIN_OPTION,
    create_registry_engine,
    parse_url,
    safe_url,
)
from tether.cloud.registry.errors import (
    AdminExistsError,
    AdminNotFoundError,
    AdminStateError,
    AutoRegistrationPolicyError,
    CAExistsError,
    CANotRegisteredError,
    CARoleMismatchError,
    CAStateError,
    CertificateExistsError,
    CertificateIssuerMismatchError,
    CertificateListedOnCRLError,
    CertificateNotFoundError,
    CertificateStateError,
    ConcurrentChangeError,
    CRLApplicationError,
    DatabaseUnavailableError,
    DeviceExistsError,
    DeviceNotFoundError,
    InvalidRegistryInputError,
    NotACAError,
    RegistrationCodeError,
    SerialBoundError,
)
from tether.cloud.registry.models import (
    AdminModel,
    AuditModel,
    CAModel,
    CertificateModel,
    DeviceModel,
    PublishedCRLModel,
    RegistrationCodeModel,
    UTCDateTime,
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
    ConnectionVerdict,
    CRLEffect,
    DetailValue,
    DeviceRecord,
    DeviceStatus,
    Page,
    Provisioning,
    RegistrationCodeRecord,
    VerdictCode,
)
from tether.errors import TetherError
from tether.pki.loading import sha256_fingerprint
from tether.pki.names import ROLE_PURPOSE, SERIAL_PATTERN, Role, role_of

_T = TypeVar("_T")

MAX_PAGE_SIZE = 1000
_ACTION_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_FINGERPRINT_RE = re.compile(r"[0-9a-f]{64}")
_ADMIN_NAME_RE = re.compile(r"[a-z][a-z0-9._-]{0,63}")
ROOT_CRL_ISSUER = "root"
_AUTO_REGISTRATION_ROLES = frozenset({CARole.DEVICE, CARole.FACTORY})


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
    return _check_serial(cns[0].value)


class Registry:
    """The registry on one database. Thread-safe: share one instance per process.

    Use :meth:`open`; close with :meth:`close` (or use it as a context manager).
    """

    def __init__(self, engine: Engine, *, display_url: str) -> None:
        """Wrap an engine that is already migrated (see :meth:`open`)."""
        self._engine = engine
        self._write_engine = engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        # One read statement is its own snapshot: no BEGIN/ROLLBACK round around it.
        self._single_statement_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._display_url = display_url
        self._clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, *, busy_timeout_s: float = 5.0) -> Registry:
        """Open the registry at ``url`` and upgrade its schema to head.

        ``url`` is ``sqlite:///path.db`` (the file is created; its directory must exist) or
        ``postgresql+psycopg://user:pass@host/db``. Raises DatabaseURLError for a bad URL and
        DatabaseUnavailableError (a StorageError; the message masks the password) when the
        database cannot be reached or migrated.
        """
        parsed = parse_url(url)
        display = safe_url(parsed)
        engine = create_registry_engine(parsed, busy_timeout_s=busy_timeout_s)
        try:
            migrate.upgrade(engine)
        except DBAPIError as exc:
            engine.dispose()
            raise DatabaseUnavailableError(
                f"Cannot open the registry database {display}: {_db_reason(exc)}. "
                "Check that it is reachable and writable."
            ) from exc
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, display_url=display)

    def close(self) -> None:
        """Release all connections; the registry cannot be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Registry:
        """Use the registry as a context manager that closes it."""
        return self

    def __exit__(self, *_exc: object) -> None:
        """Close the registry."""
        self.close()

    @property
    def url(self) -> str:
        """The database URL with its password masked."""
        return self._display_url

    # -- CAs -------------------------------------------------------------------------------

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
        actor = _check_actor(actor)
        role = _check_ca_certificate(cert, CARole(role), allow_auto_registration)
        now = self._clock()
        with self._write() as session:
            return _ca_record(_insert_ca(session, cert, role, allow_auto_registration, actor, now))

    def get_ca(self, fingerprint: str) -> CARecord:
        """The CA with this SHA-256 fingerprint. Raises CANotRegisteredError."""
        fingerprint = _check_fingerprint(fingerprint)
        with self._read() as session:
            return _ca_record(_load_ca(session, fingerprint))

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
            return None if model is None else _ca_record(model)

    def list_cas(self, *, status: CAStatus | None = None) -> list[CARecord]:
        """All registered CAs (optionally only those with ``status``), oldest first."""
        stmt = select(CAModel).order_by(CAModel.id)
        if status is not None:
            stmt = stmt.where(CAModel.status == CAStatus(status).value)
        with self._read() as session:
            return [_ca_record(m) for m in session.scalars(stmt)]

    def set_ca_status(self, fingerprint: str, status: CAStatus, *, actor: str) -> CARecord:
        """Activate, deactivate or revoke a CA. Revocation is final (CAStateError after it).

        Setting the status it already has changes nothing and writes no audit row.
        """
        actor = _check_actor(actor)
        status = CAStatus(status)
        fingerprint = _check_fingerprint(fingerprint)
        now = self._clock()
        with self._write() as session:
            model = _load_ca(session, fingerprint)
            old = CAStatus(model.status)
            if old == status:
                return _ca_record(model)
            if old == CAStatus.REVOKED:
                raise CAStateError(
                    f"The CA {fingerprint} is revoked and stays revoked; register a new CA."
                )
            model.status = status.value
            model.updated_at = now
            _audit(session, now, actor, "ca.status", fingerprint, {"from": old, "to": status.value})
            return _ca_record(model)

    def set_ca_auto_registration(self, fingerprint: str, allow: bool, *, actor: str) -> CARecord:
        """Allow or forbid unknown devices under this CA to self-register on first connect.

        Raises AutoRegistrationPolicyError for server and service CAs.
        """
        actor = _check_actor(actor)
        fingerprint = _check_fingerprint(fingerprint)
        now = self._clock()
        with self._write() as session:
            model = _load_ca(session, fingerprint)
            if allow and CARole(model.role) not in _AUTO_REGISTRATION_ROLES:
                raise AutoRegistrationPolicyError(
                    f"Only device and factory CAs may let unknown devices self-register, not "
                    f"a {model.role} CA."
                )
            if model.allow_auto_registration == allow:
                return _ca_record(model)
            model.allow_auto_registration = allow
            model.updated_at = now
            _audit(session, now, actor, "ca.auto_registration", fingerprint, {"allow": allow})
            return _ca_record(model)

    # -- devices ---------------------------------------------------------------------------

    def add_device(self, serial: str, *, provisioning: Provisioning, actor: str) -> DeviceRecord:
        """Register an enabled device. Raises DeviceExistsError on a duplicate serial."""
        actor = _check_actor(actor)
        serial = _check_serial(serial)
        provisioning = Provisioning(provisioning)
        now = self._clock()

        def exists() -> DeviceExistsError:
            return DeviceExistsError(f"A device with serial {serial!r} is already registered.")

        with self._write() as session:
            if session.scalar(select(DeviceModel.id).where(DeviceModel.serial == serial)):
                raise exists()
            model = _new_device(serial, provisioning, now)
            session.add(model)
            self._flush(session, exists)
            _audit(session, now, actor, "device.add", serial, {"provisioning": provisioning.value})
            return _device_record(model)

    def get_device(self, serial: str) -> DeviceRecord:
        """The device with this serial. Raises DeviceNotFoundError."""
        serial = _check_serial(serial)
        with self._read() as session:
            return _device_record(_load_device(session, serial))

    def set_device_status(self, serial: str, status: DeviceStatus, *, actor: str) -> DeviceRecord:
        """Enable or disable a device; a disabled device is refused at the next handshake.

        Setting the status it already has changes nothing and writes no audit row.
        """
        actor = _check_actor(actor)
        serial = _check_serial(serial)
        status = DeviceStatus(status)
        now = self._clock()
        with self._write() as session:
            model = _load_device(session, serial)
            old = model.status
            if old == status.value:
                return _device_record(model)
            model.status = status.value
            model.updated_at = now
            _audit(session, now, actor, "device.status", serial, {"from": old, "to": status.value})
            return _device_record(model)

    def list_devices(
        self,
        *,
        search: str | None = None,
        status: DeviceStatus | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[DeviceRecord]:
        """Devices ordered by serial; ``search`` matches any part of the serial, literally."""
        _check_page(offset, limit)
        stmt = select(DeviceModel)
        if search:
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(DeviceModel.serial.like(f"%{escaped}%", escape="\\"))
        if status is not None:
            stmt = stmt.where(DeviceModel.status == DeviceStatus(status).value)
        with self._read() as session:
            return _page(session, stmt, DeviceModel.serial, _device_record, offset, limit)

    def touch_device(self, serial: str, at: datetime) -> None:
        """Record that the device connected at ``at`` (aware). Not audited: hot path.

        ``first_seen`` is set once; ``last_seen`` only moves forward, so late callers from
        other threads cannot move it back. Raises DeviceNotFoundError.
        """
        if self.touch_devices({serial: at}) == 0:
            raise DeviceNotFoundError(f"No device with serial {serial!r} is registered.")

    def touch_devices(self, seen: Mapping[str, datetime]) -> int:
        """``touch_device`` for many devices in one transaction; returns how many were found.

        The gateway batches its connections' sightings through this, so a burst of handshakes
        costs one commit (one fsync on SQLite) instead of one each. Serials that are not
        registered are skipped.
        """
        updates = []
        for serial, at in seen.items():
            if at.tzinfo is None:
                raise InvalidRegistryInputError("touch_device needs an aware datetime (UTC).")
            updates.append((_check_serial(serial), at))
        found = 0
        with self._write() as session:
            for serial, at in updates:
                at_value = literal(at, type_=UTCDateTime())
                stmt = (
                    update(DeviceModel)
                    .where(DeviceModel.serial == serial)
                    .values(
                        first_seen=func.coalesce(DeviceModel.first_seen, at_value),
                        last_seen=case(
                            (DeviceModel.last_seen.is_(None), at_value),
                            (DeviceModel.last_seen < at_value, at_value),
                            else_=DeviceModel.last_seen,
                        ),
                    )
                    .execution_options(synchronize_session=False)
                )
                found += session.execute(stmt).rowcount  # type: ignore[attr-defined]
        return found

    # -- certificates ----------------------------------------------------------------------

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
        actor = _check_actor(actor)
        issuer_fingerprint = _check_fingerprint(issuer_fingerprint)
        state = CertState(state)
        if state == CertState.REVOKED:
            raise InvalidRegistryInputError(
                "A certificate cannot be added as revoked; add it, then revoke it with a reason."
            )
        serial = None if device_serial is None else _check_serial(device_serial)
        now = self._clock()
        with self._write() as session:
            ca = _load_ca(session, issuer_fingerprint)
            _check_issued_by(cert, ca)
            device = None if serial is None else _load_device(session, serial)
            if device is not None:
                _bind(device, ca)
            model = self._insert_certificate(session, cert, ca, device, state, now)
            _audit(
                session,
                now,
                actor,
                "certificate.add",
                model.fingerprint,
                {
                    "serial_number": model.serial_number,
                    "issuer": issuer_fingerprint,
                    "device": serial,
                    "state": state.value,
                },
            )
            return _cert_record(model)

    def get_certificate(self, fingerprint: str) -> CertificateRecord:
        """The certificate with this SHA-256 fingerprint. Raises CertificateNotFoundError."""
        fingerprint = _check_fingerprint(fingerprint)
        with self._read() as session:
            return _cert_record(_load_cert(session, fingerprint))

    def list_certificates(
        self,
        *,
        device_serial: str | None = None,
        issuer_fingerprint: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> Page[CertificateRecord]:
        """Certificates in the order they were added, optionally of one device or issuer."""
        _check_page(offset, limit)
        stmt = select(CertificateModel)
        if device_serial is not None:
            serial = _check_serial(device_serial)
            stmt = stmt.where(
                CertificateModel.device_id
                == select(DeviceModel.id).where(DeviceModel.serial == serial).scalar_subquery()
            )
        if issuer_fingerprint is not None:
            issuer = _check_fingerprint(issuer_fingerprint)
            stmt = stmt.where(
                CertificateModel.issuer_id
                == select(CAModel.id).where(CAModel.fingerprint == issuer).scalar_subquery()
            )
        with self._read() as session:
            return _page(session, stmt, CertificateModel.id, _cert_record, offset, limit)

    def set_certificate_state(
        self, fingerprint: str, state: CertState, *, actor: str
    ) -> CertificateRecord:
        """Move a certificate between pending, active and inactive.

        Revocation goes through :meth:`revoke_certificate` and is final
        (CertificateStateError). Setting the current state changes nothing, no audit row.
        """
        actor = _check_actor(actor)
        fingerprint = _check_fingerprint(fingerprint)
        state = CertState(state)
        if state == CertState.REVOKED:
            raise InvalidRegistryInputError(
                "Use revoke_certificate to revoke: a revocation needs a reason."
            )
        now = self._clock()
        with self._write() as session:
            model = _load_cert(session, fingerprint)
            old = model.state
            if old == CertState.REVOKED.value:
                raise CertificateStateError(
                    f"The certificate {fingerprint} is revoked and stays revoked; issue a new one."
                )
            if old == state.value:
                return _cert_record(model)
            model.state = state.value
            model.updated_at = now
            _audit(
                session, now, actor, "certificate.state", fingerprint, {"from": old, "to": state}
            )
            return _cert_record(model)

    def revoke_certificate(
        self, fingerprint: str, *, reason: x509.ReasonFlags, actor: str
    ) -> CertificateRecord:
        """Revoke a certificate; once this returns the revocation is committed and durable.

        Raises CertificateNotFoundError, CertificateStateError when already revoked, and
        InvalidRegistryInputError for ``remove_from_crl`` (a delta-CRL code, not a reason).
        """
        actor = _check_actor(actor)
        fingerprint = _check_fingerprint(fingerprint)
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
            old = model.state
            model.state = CertState.REVOKED.value
            model.revocation_reason = reason.value
            model.revoked_at = now
            model.updated_at = now
            _audit(
                session,
                now,
                actor,
                "certificate.revoke",
                fingerprint,
                {"reason": reason.value, "from": old, "serial_number": model.serial_number},
            )
            return _cert_record(model)

    def revoked_certificates(self, issuer_fingerprint: str) -> list[CertificateRecord]:
        """Every revoked certificate the CA issued, in revocation order (CRL input).

        Raises CANotRegisteredError.
        """
        issuer_fingerprint = _check_fingerprint(issuer_fingerprint)
        with self._read() as session:
            ca = _load_ca(session, issuer_fingerprint)
            models = session.scalars(
                select(CertificateModel)
                .where(
                    CertificateModel.issuer_id == ca.id,
                    CertificateModel.state == CertState.REVOKED.value,
                )
                .order_by(CertificateModel.revoked_at, CertificateModel.id)
            )
            return [_cert_record(m) for m in models]

    # -- just-in-time registration ---------------------------------------------------------

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
        actor = _check_actor(actor)
        serial = _check_serial(device_serial)
        issuer_fingerprint = _check_fingerprint(issuer_fingerprint)
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
            ca = _load_ca(session, issuer)
            if ca.status != CAStatus.ACTIVE.value:
                raise CAStateError(f"The CA {issuer} is {ca.status}; it cannot admit devices.")
            if not ca.allow_auto_registration:
                raise AutoRegistrationPolicyError(
                    f"The CA {issuer} does not allow unknown devices to self-register; "
                    "register the device first or allow auto-registration on the CA."
                )
            _check_issued_by(cert, ca)
            existing = session.scalars(
                select(CertificateModel).where(CertificateModel.fingerprint == fingerprint)
            ).first()
            if existing is not None:
                if existing.device is None or existing.device.serial != serial:
                    raise CertificateExistsError(
                        f"The certificate {fingerprint} is registered for another device."
                    )
                return _device_record(existing.device), _cert_record(existing)
            device = session.scalars(
                select(DeviceModel).where(DeviceModel.serial == serial)
            ).first()
            created = device is None
            if device is None:
                device = _new_device(serial, Provisioning.JIT, now)
                session.add(device)
            elif device.ca_id != ca.id:
                # JIT only ever creates a device, or renews one under the CA it belongs to.
                raise _bound_elsewhere(serial, device, ca)
            _bind(device, ca)
            try:
                model = self._insert_certificate(session, cert, ca, device, CertState.ACTIVE, now)
            except (_DuplicateFingerprintError, IntegrityError) as exc:
                # We checked for this certificate above: a concurrent registration won. Under
                # READ COMMITTED (PostgreSQL) its commit is visible now; retry to return it.
                raise _JITRaceError from exc
            _audit(
                session,
                now,
                actor,
                "device.register_jit",
                serial,
                {"certificate": fingerprint, "issuer": issuer, "device_created": created},
            )
            return _device_record(device), _cert_record(model)

    def rebind_device(self, serial: str, *, ca_fingerprint: str, actor: str) -> DeviceRecord:
        """Move a device to another CA: the one explicit way a serial changes owner; audited.

        From then on only certificates from the new CA are accepted for the serial; the old
        CA's certificates are refused at the next handshake (``serial_bound_to_other_ca``) and
        live sessions dropped by the change feed. The new CA must be an active client CA.
        """
        actor = _check_actor(actor)
        serial = _check_serial(serial)
        ca_fingerprint = _check_fingerprint(ca_fingerprint)
        now = self._clock()
        with self._write() as session:
            device = _load_device(session, serial)
            ca = _load_ca(session, ca_fingerprint)
            if ca.status != CAStatus.ACTIVE.value or ca.role == CARole.SERVER.value:
                raise CAStateError(
                    f"A device can move only to an active client CA; {ca_fingerprint} is a "
                    f"{ca.status} {ca.role} CA."
                )
            old = None if device.ca is None else device.ca.fingerprint
            if old == ca.fingerprint:
                return _device_record(device)
            device.ca = ca
            device.ca_id = ca.id
            device.updated_at = now
            details = {"from": old, "to": ca_fingerprint}
            _audit(session, now, actor, "device.rebind", serial, details)
            return _device_record(device)

    def apply_crl(
        self,
        issuer: str,
        crl: x509.CertificateRevocationList,
        *,
        issuer_certificate: x509.Certificate,
        actor: str,
    ) -> CRLEffect:
        """Publish ``crl`` for ``issuer`` ("root" or a CA fingerprint) and make it take effect.

        In one transaction: the CRL is stored (what ``/crl/`` serves), every registered
        certificate it lists under that CA is revoked with the CRL's reason, and for the root
        every registered issuing CA the root signed whose serial number it lists is revoked;
        each change is audited like a revocation through the API (``source: crl``), so the
        change feed drops live sessions. The CRL must be signed by ``issuer_certificate``
        (CRLApplicationError otherwise, nothing changed). Serial numbers the registry holds
        no certificate for stay refused: registration and JIT check the published CRL.
        """
        actor = _check_actor(actor)
        if issuer != ROOT_CRL_ISSUER:
            issuer = _check_fingerprint(issuer)
        _check_crl_signer(crl, issuer_certificate)
        der = crl.public_bytes(Encoding.DER)
        listed = {entry.serial_number: _crl_reason(entry) for entry in crl}
        now = self._clock()
        revoked_certs: list[str] = []
        revoked_cas: list[str] = []
        matched = 0
        with self._write() as session:
            self._store_crl(session, issuer, der, now, actor)
            if issuer == ROOT_CRL_ISSUER:
                for ca in session.scalars(select(CAModel).order_by(CAModel.id)):
                    ca_cert = x509.load_pem_x509_certificate(ca.pem.encode("ascii"))
                    if ca_cert.serial_number not in listed or not _signed_by(
                        ca_cert, issuer_certificate
                    ):
                        continue
                    matched += 1
                    if ca.status != CAStatus.REVOKED.value:
                        old = ca.status
                        ca.status = CAStatus.REVOKED.value
                        ca.updated_at = now
                        reason = listed[ca_cert.serial_number].value
                        _audit(
                            session, now, actor, "ca.status", ca.fingerprint,
                            {"from": old, "to": CAStatus.REVOKED.value, "source": "crl",
                             "reason": reason},
                        )  # fmt: skip
                        revoked_cas.append(ca.fingerprint)
            else:
                ca = _load_ca(session, issuer)
                by_hex = {f"{number:x}": number for number in listed}
                models = session.scalars(
                    select(CertificateModel).where(
                        CertificateModel.issuer_id == ca.id,
                        CertificateModel.serial_number.in_(list(by_hex)),
                    )
                )
                for model in models:
                    matched += 1
                    if model.state == CertState.REVOKED.value:
                        continue
                    reason = listed[by_hex[model.serial_number]]
                    old = model.state
                    model.state = CertState.REVOKED.value
                    model.revocation_reason = reason.value
                    model.revoked_at = now
                    model.updated_at = now
                    _audit(
                        session, now, actor, "certificate.revoke", model.fingerprint,
                        {"reason": reason.value, "from": old,
                         "serial_number": model.serial_number, "source": "crl"},
                    )  # fmt: skip
                    revoked_certs.append(model.fingerprint)
        return CRLEffect(
            revoked_certificates=tuple(revoked_certs),
            revoked_cas=tuple(revoked_cas),
            not_registered=len(listed) - matched,
        )

    # -- admin API: provisioning, CA registration codes, admins, published CRLs ------------

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
        actor = _check_actor(actor)
        serial = _check_serial(serial)
        issuer_fingerprint = _check_fingerprint(issuer_fingerprint)
        provisioning = Provisioning(provisioning)
        now = self._clock()

        def exists() -> DeviceExistsError:
            return DeviceExistsError(f"A device with serial {serial!r} is already registered.")

        with self._write() as session:
            if session.scalar(select(DeviceModel.id).where(DeviceModel.serial == serial)):
                raise exists()
            ca = _load_ca(session, issuer_fingerprint)
            _check_issued_by(cert, ca)
            device = _new_device(serial, provisioning, now)
            _bind(device, ca)
            session.add(device)
            self._flush(session, exists)
            _audit(session, now, actor, "device.add", serial, {"provisioning": provisioning.value})
            model = self._insert_certificate(session, cert, ca, device, CertState.ACTIVE, now)
            _audit(
                session,
                now,
                actor,
                "certificate.add",
                model.fingerprint,
                {
                    "serial_number": model.serial_number,
                    "issuer": issuer_fingerprint,
                    "device": serial,
                    "state": CertState.ACTIVE.value,
                },
            )
            return _device_record(device), _cert_record(model)

    def create_registration_code(
        self, code: str, *, expires_at: datetime, actor: str
    ) -> RegistrationCodeRecord:
        """Store a fresh CA registration code (the caller makes it random); audited.

        ``code`` must look like a serial (it becomes a certificate CN).
        """
        actor = _check_actor(actor)
        code = _check_serial(code)
        if expires_at.tzinfo is None:
            raise InvalidRegistryInputError("expires_at must be an aware datetime (UTC).")
        now = self._clock()
        with self._write() as session:
            model = RegistrationCodeModel(
                code=code, created_by=actor, created_at=now, expires_at=expires_at, used_at=None
            )
            session.add(model)
            self._flush(
                session, lambda: ConcurrentChangeError("That registration code exists; retry.")
            )
            _audit(
                session,
                now,
                actor,
                "ca.registration_code",
                code,
                {"expires_at": expires_at.isoformat()},
            )
            return _code_record(model)

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
        actor = _check_actor(actor)
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
            return _ca_record(model)

    def add_admin(
        self, name: str, *, token_id: str, salt: bytes, token_hash: bytes, actor: str
    ) -> AdminRecord:
        """Store an administrator's token hash (never the token). AdminExistsError on a dup."""
        actor = _check_actor(actor)
        if not isinstance(name, str) or not _ADMIN_NAME_RE.fullmatch(name):
            raise InvalidRegistryInputError(
                f"Admin name {name!r} is not valid: 1 to 64 characters of a-z, 0-9 and . _ -, "
                "starting with a letter."
            )
        now = self._clock()

        def exists() -> AdminExistsError:
            return AdminExistsError(f"An admin named {name!r} already exists; pick another name.")

        with self._write() as session:
            if session.scalar(select(AdminModel.id).where(AdminModel.name == name)):
                raise exists()
            model = AdminModel(
                name=name,
                token_id=token_id,
                salt=salt,
                token_hash=token_hash,
                created_at=now,
                status=AdminStatus.ACTIVE.value,
                revoked_at=None,
            )
            session.add(model)
            self._flush(session, exists)
            _audit(session, now, actor, "admin.add", name, {})
            return _admin_record(model)

    def find_admin(self, token_id: str) -> AdminRecord | None:
        """The *active* administrator whose token carries ``token_id``, or None.

        A revoked administrator is not found, so its token is refused like an unknown one
        (without running the KDF) at the next request, in every process. One statement on a
        plain connection, not an ORM session: every API request asks it, and under a flood
        of random tokens its cost (CPU under the GIL the event loop needs) is the API's floor.
        """
        try:
            with self._single_statement_engine.connect() as connection:
                row = connection.execute(
                    _FIND_ADMIN, {"token_id": token_id, "status": AdminStatus.ACTIVE.value}
                ).first()
        except DBAPIError as exc:
            raise self._unavailable(exc) from exc
        if row is None:
            return None
        name, token_id, salt, token_hash, created_at, status, revoked_at = row
        return AdminRecord(
            name=name,
            token_id=token_id,
            salt=bytes(salt),
            token_hash=bytes(token_hash),
            created_at=_as_utc(created_at),
            status=AdminStatus(status),
            revoked_at=None if revoked_at is None else _as_utc(revoked_at),
        )

    def get_admin(self, name: str) -> AdminRecord:
        """The administrator called ``name``, active or revoked; AdminNotFoundError if none."""
        with self._read() as session:
            return _admin_record(_load_admin(session, name))

    def list_admins(self) -> list[AdminRecord]:
        """Every administrator (active and revoked), oldest first."""
        with self._read() as session:
            return [_admin_record(m) for m in session.scalars(select(AdminModel).order_by("id"))]

    def rotate_admin(
        self, name: str, *, token_id: str, salt: bytes, token_hash: bytes, actor: str
    ) -> AdminRecord:
        """Give an active administrator a new token (id, salt, hash); the old one dies at once.

        The old token id no longer finds the row, so every process refuses the old token at
        its next request. AdminNotFoundError, or AdminStateError for a revoked admin; audited.
        """
        actor = _check_actor(actor)
        now = self._clock()
        with self._write() as session:
            model = _load_admin(session, name)
            if model.status != AdminStatus.ACTIVE.value:
                raise AdminStateError(
                    f"The admin {name!r} is revoked; revocation is final. Add a new admin "
                    "instead (`tether cloud admin add`)."
                )
            model.token_id = token_id
            model.salt = salt
            model.token_hash = token_hash
            self._flush(session, lambda: ConcurrentChangeError("That token id is taken; retry."))
            _audit(session, now, actor, "admin.rotate", model.name, {})
            return _admin_record(model)

    def revoke_admin(self, name: str, *, actor: str) -> AdminRecord:
        """Revoke an administrator for good: its token is refused from the next request.

        The last active administrator cannot be revoked (AdminStateError): the API would be
        left without anyone to run it. Rotate its token instead, or add another admin first.
        AdminNotFoundError for an unknown name; a revoked admin stays revoked. Audited.
        """
        actor = _check_actor(actor)
        now = self._clock()
        with self._write() as session:
            model = _load_admin(session, name)
            if model.status != AdminStatus.ACTIVE.value:
                raise AdminStateError(f"The admin {name!r} is already revoked.")
            # FOR UPDATE (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers):
            # two concurrent revocations cannot both see another active admin and leave none.
            active = session.scalars(
                select(AdminModel.id)
                .where(AdminModel.status == AdminStatus.ACTIVE.value)
                .with_for_update()
            ).all()
            if len(active) <= 1:
                raise AdminStateError(
                    f"The admin {name!r} is the last active admin; revoking it would leave the "
                    "API without an administrator. Rotate its token instead (`tether cloud "
                    "admin rotate`), or add another admin first."
                )
            model.status = AdminStatus.REVOKED.value
            model.revoked_at = now
            session.flush()
            _audit(session, now, actor, "admin.revoke", model.name, {})
            return _admin_record(model)

    def publish_crl(self, issuer: str, der: bytes, *, actor: str) -> None:
        """Store (or replace) the CRL the cloud serves for ``issuer`` ("root" or a CA
        fingerprint). The caller has verified its signature; audited."""
        actor = _check_actor(actor)
        if issuer != ROOT_CRL_ISSUER:
            issuer = _check_fingerprint(issuer)
        now = self._clock()
        with self._write() as session:
            self._store_crl(session, issuer, bytes(der), now, actor)

    @staticmethod
    def _store_crl(session: Session, issuer: str, der: bytes, now: datetime, actor: str) -> None:
        if issuer != ROOT_CRL_ISSUER:
            _load_ca(session, issuer)
        model = session.scalars(
            select(PublishedCRLModel).where(PublishedCRLModel.issuer == issuer)
        ).first()
        if model is None:
            session.add(PublishedCRLModel(issuer=issuer, der=der, uploaded_at=now))
        else:
            model.der = der
            model.uploaded_at = now
        _audit(session, now, actor, "crl.publish", issuer, {"bytes": len(der)})

    def published_crl(self, issuer: str) -> bytes | None:
        """The DER of the CRL uploaded for ``issuer``, or None."""
        with self._read() as session:
            return session.scalar(
                select(PublishedCRLModel.der).where(PublishedCRLModel.issuer == issuer)
            )

    # -- audit -----------------------------------------------------------------------------

    def audit(
        self,
        *,
        actor: str,
        action: str,
        target: str,
        details: Mapping[str, DetailValue] | None = None,
    ) -> AuditEntry:
        """Append one audit row for an action taken outside the registry (e.g. a login).

        ``action`` is a lowercase dotted name like ``api.login_failed``; ``details`` values
        are str, int, bool or None.
        """
        actor = _check_actor(actor)
        if not _ACTION_RE.fullmatch(action):
            raise InvalidRegistryInputError(
                f"Audit action {action!r} must be a lowercase dotted name (a-z, 0-9, . _ -)."
            )
        if not target or len(target) > 200:
            raise InvalidRegistryInputError("An audit target must be 1 to 200 characters.")
        now = self._clock()
        with self._write() as session:
            return _audit_entry(_audit(session, now, actor, action, target, details or {}))

    def list_audit(
        self, *, offset: int = 0, limit: int = 50, target: str | None = None
    ) -> Page[AuditEntry]:
        """Audit entries, newest first, optionally only those about ``target``."""
        _check_page(offset, limit)
        stmt = select(AuditModel)
        if target is not None:
            stmt = stmt.where(AuditModel.target == target)
        with self._read() as session:
            return _page(session, stmt, AuditModel.id.desc(), _audit_entry, offset, limit)

    def audit_after(self, after_id: int, *, limit: int = 500) -> list[AuditEntry]:
        """Audit entries with ``id > after_id``, oldest first: a feed to follow changes.

        The gateway tails this to drop live sessions when a certificate is revoked, a device
        disabled or a CA deactivated, whichever process made the change.
        """
        _check_page(0, limit)
        stmt = select(AuditModel).where(AuditModel.id > after_id).order_by(AuditModel.id)
        with self._read() as session:
            return [_audit_entry(m) for m in session.scalars(stmt.limit(limit))]

    def last_audit_id(self) -> int:
        """The id of the newest audit entry (0 for an empty log): where a feed starts."""
        with self._read() as session:
            return session.scalar(select(func.max(AuditModel.id))) or 0

    # -- the gateway's question ------------------------------------------------------------

    def check_connection(
        self, *, cert_fingerprint: str, device_serial: str, issuer_fingerprint: str
    ) -> ConnectionVerdict:
        """May this certificate (already TLS-verified) connect as this device? One query.

        Checks, in order: the issuer is a registered, active CA; the serial belongs to that CA
        (invariant 11); the certificate is known under it, active and bound to this device (or
        unknown, and the CA allows JIT); the device exists and is enabled. The same statement
        reads the audit log's position, so the verdict and ``audit_position`` come from one
        snapshot. Read-only; raises only for malformed input or a database failure. Runs on a
        plain connection, not an ORM session: it is the one query every handshake waits for.
        """
        fingerprint = _check_fingerprint(cert_fingerprint)
        serial = _check_serial(device_serial)
        issuer = _check_fingerprint(issuer_fingerprint)
        try:
            with self._single_statement_engine.connect() as connection:
                row = connection.execute(
                    _CHECK_CONNECTION,
                    {"fingerprint": fingerprint, "issuer": issuer, "serial": serial},
                ).one()
        except DBAPIError as exc:
            raise self._unavailable(exc) from exc
        (
            ca_status, ca_jit, cert_state, cert_issuer, cert_device, device_status, device_ca,
            position,
        ) = row  # fmt: skip
        verdict = _verdict(
            ca_status,
            bool(ca_jit),
            cert_state,
            cert_issuer,
            cert_device,
            device_status,
            issuer,
            serial,
            device_ca=device_ca,
        )
        return replace(verdict, audit_position=position or 0)

    # -- plumbing --------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Session]:
        try:
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                yield session
        except DBAPIError as exc:
            raise self._unavailable(exc) from exc

    @contextmanager
    def _write(self) -> Iterator[Session]:
        try:
            with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
                yield session
        except IntegrityError as exc:
            # The methods check constraints first; reaching here means a concurrent writer.
            raise ConcurrentChangeError(
                "A concurrent change to the registry conflicted with this one; nothing was "
                "changed, retry."
            ) from exc
        except DBAPIError as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: DBAPIError) -> DatabaseUnavailableError:
        return DatabaseUnavailableError(
            f"The registry database {self._display_url} failed: {_db_reason(exc)}. "
            "Nothing was changed; check the database and retry."
        )

    @staticmethod
    def _flush(session: Session, conflict: Callable[[], Exception]) -> None:
        try:
            session.flush()
        except IntegrityError as exc:
            raise conflict() from exc

    def _insert_certificate(
        self,
        session: Session,
        cert: x509.Certificate,
        ca: CAModel,
        device: DeviceModel | None,
        state: CertState,
        now: datetime,
    ) -> CertificateModel:
        fingerprint = certificate_fingerprint(cert)
        serial_number = _serial_hex(cert)
        if session.scalar(
            select(CertificateModel.id).where(CertificateModel.fingerprint == fingerprint)
        ):
            raise _DuplicateFingerprintError(
                f"The certificate {fingerprint} is already registered."
            )
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


class _DuplicateFingerprintError(CertificateExistsError):
    """The certificate itself (not just its serial number) is already registered."""


class _JITRaceError(Exception):
    """A unique constraint fired under a concurrent writer; the caller retries or reports."""


def _check_connection_statement() -> Select[Any]:
    """``check_connection``'s one statement, built once (it runs on every handshake)."""
    fingerprint = bindparam("fingerprint", type_=String)
    issuer = bindparam("issuer", type_=String)
    serial = bindparam("serial", type_=String)
    cert_sub = select(CertificateModel).where(CertificateModel.fingerprint == fingerprint)
    cert_sub = cert_sub.subquery()
    return select(
        select(CAModel.status).where(CAModel.fingerprint == issuer).scalar_subquery(),
        select(CAModel.allow_auto_registration)
        .where(CAModel.fingerprint == issuer)
        .scalar_subquery(),
        select(cert_sub.c.state).scalar_subquery(),
        select(CAModel.fingerprint)
        .join(cert_sub, cert_sub.c.issuer_id == CAModel.id)
        .scalar_subquery(),
        select(DeviceModel.serial)
        .join(cert_sub, cert_sub.c.device_id == DeviceModel.id)
        .scalar_subquery(),
        select(DeviceModel.status).where(DeviceModel.serial == serial).scalar_subquery(),
        select(CAModel.fingerprint)
        .join(DeviceModel, DeviceModel.ca_id == CAModel.id)
        .where(DeviceModel.serial == serial)
        .scalar_subquery(),
        select(func.max(AuditModel.id)).scalar_subquery(),
    )


_CHECK_CONNECTION = _check_connection_statement()
_FIND_ADMIN = select(
    AdminModel.name,
    AdminModel.token_id,
    AdminModel.salt,
    AdminModel.token_hash,
    AdminModel.created_at,
    AdminModel.status,
    AdminModel.revoked_at,
).where(
    AdminModel.token_id == bindparam("token_id", type_=String),
    AdminModel.status == bindparam("status", type_=String),
)


def _as_utc(value: datetime) -> datetime:
    """A datetime column read through Core (UTCDateTime applies; this only guards naive)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# -- helpers (module-private) ----------------------------------------------------------------


def _db_reason(exc: DBAPIError) -> str:
    # The driver message, first line only: never the SQL statement or its parameters.
    return str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__


def _check_actor(actor: str) -> str:
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 200:
        raise InvalidRegistryInputError(
            "Every change needs an actor (who did it): 1 to 200 characters."
        )
    return actor


def _check_serial(serial: str) -> str:
    if not isinstance(serial, str) or not SERIAL_PATTERN.fullmatch(serial):
        raise InvalidRegistryInputError(
            f"Device serial {serial!r} is not valid: use 1 to 64 characters of A-Z, a-z, "
            "0-9 and . _ - , starting with a letter or digit (the certificate profile's "
            "serial grammar)."
        )
    return serial


def _check_fingerprint(fingerprint: str) -> str:
    normalized = (
        fingerprint.replace(":", "").strip().lower() if isinstance(fingerprint, str) else ""
    )
    if not _FINGERPRINT_RE.fullmatch(normalized):
        raise InvalidRegistryInputError(
            f"{fingerprint!r} is not a SHA-256 fingerprint: give 64 hex digits (colons allowed)."
        )
    return normalized


def _check_page(offset: int, limit: int) -> None:
    if offset < 0 or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidRegistryInputError(
            f"Page offset must be >= 0 and limit between 1 and {MAX_PAGE_SIZE}."
        )


def _check_issued_by(cert: x509.Certificate, ca: CAModel) -> None:
    ca_cert = x509.load_pem_x509_certificate(ca.pem.encode("ascii"))
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateIssuerMismatchError(
            f"The certificate {cert.subject.rfc4514_string()} was not signed by the CA "
            f"{ca.fingerprint} ({ca.subject}); name its real issuer."
        ) from exc


def _check_details(details: Mapping[str, DetailValue]) -> str:
    for key, value in details.items():
        if not isinstance(key, str) or not (value is None or isinstance(value, str | int | bool)):
            raise InvalidRegistryInputError(
                f"Audit detail {key!r} must map a string to a str, int, bool or None."
            )
    return json.dumps(dict(details), sort_keys=True, separators=(",", ":"))


def _serial_hex(cert: x509.Certificate) -> str:
    if cert.serial_number <= 0:
        raise InvalidRegistryInputError(
            "The certificate's serial number is not positive (RFC 5280 4.1.2.2)."
        )
    return format(cert.serial_number, "x")


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
    if allow_jit and role not in _AUTO_REGISTRATION_ROLES:
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
    if cert.issuer == cert.subject and _signed_by(cert, cert):
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
    fingerprint = certificate_fingerprint(cert)
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
    Registry._flush(session, lambda: CAExistsError(f"The CA {fingerprint} is registered."))
    _audit(
        session,
        now,
        actor,
        "ca.register",
        fingerprint,
        {
            "subject": model.subject,
            "role": role.value,
            "allow_auto_registration": allow_auto_registration,
        },
    )
    return model


def _bind(device: DeviceModel, ca: CAModel) -> None:
    """Bind an unbound device to ``ca``; refuse a device that belongs to another CA."""
    if device.ca_id is None and device.ca is None:
        device.ca = ca
        return
    if (device.ca.id if device.ca is not None else device.ca_id) != ca.id:
        raise _bound_elsewhere(device.serial, device, ca)


def _bound_elsewhere(serial: str, device: DeviceModel, ca: CAModel) -> SerialBoundError:
    owner = "no CA yet" if device.ca is None else f"the CA {device.ca.fingerprint}"
    return SerialBoundError(
        f"The serial {serial!r} belongs to {owner}, so the CA {ca.fingerprint} cannot vouch "
        "for it; move the device explicitly (`tether cloud move-device`) if that is intended."
    )


def _crl_reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags:
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return x509.ReasonFlags.unspecified
    return x509.ReasonFlags.unspecified if reason is x509.ReasonFlags.remove_from_crl else reason


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _check_crl_signer(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> None:
    if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        raise CRLApplicationError(
            f"The CRL is not signed by {issuer.subject.rfc4514_string()}; upload the CRL that "
            "CA signed. Nothing was changed."
        )


def _new_device(serial: str, provisioning: Provisioning, now: datetime) -> DeviceModel:
    return DeviceModel(
        serial=serial,
        status=DeviceStatus.ENABLED.value,
        provisioning=provisioning.value,
        first_seen=None,
        last_seen=None,
        created_at=now,
        updated_at=now,
    )


def _audit(
    session: Session,
    now: datetime,
    actor: str,
    action: str,
    target: str,
    details: Mapping[str, DetailValue],
) -> AuditModel:
    row = AuditModel(
        at=now, actor=actor, action=action, target=target, details=_check_details(details)
    )
    session.add(row)
    session.flush()
    return row


def _load_ca(session: Session, fingerprint: str) -> CAModel:
    model = session.scalars(select(CAModel).where(CAModel.fingerprint == fingerprint)).first()
    if model is None:
        raise CANotRegisteredError(
            f"No CA with fingerprint {fingerprint} is registered; register it first."
        )
    return model


def _load_admin(session: Session, name: str) -> AdminModel:
    model = session.scalars(select(AdminModel).where(AdminModel.name == name)).first()
    if model is None:
        raise AdminNotFoundError(
            f"No admin named {name!r}; `tether cloud admin list` shows the admins."
        )
    return model


def _load_device(session: Session, serial: str) -> DeviceModel:
    model = session.scalars(select(DeviceModel).where(DeviceModel.serial == serial)).first()
    if model is None:
        raise DeviceNotFoundError(f"No device with serial {serial!r} is registered.")
    return model


def _load_cert(session: Session, fingerprint: str) -> CertificateModel:
    model = session.scalars(
        select(CertificateModel).where(CertificateModel.fingerprint == fingerprint)
    ).first()
    if model is None:
        raise CertificateNotFoundError(
            f"No certificate with fingerprint {fingerprint} is registered."
        )
    return model


def _page(
    session: Session,
    stmt: Any,
    order_by: Any,
    convert: Callable[[Any], _T],
    offset: int,
    limit: int,
) -> Page[_T]:
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(order_by).offset(offset).limit(limit)).unique()
    return Page(items=tuple(convert(m) for m in rows), total=total, offset=offset, limit=limit)


def _ca_record(m: CAModel) -> CARecord:
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


def _admin_record(m: AdminModel) -> AdminRecord:
    return AdminRecord(
        name=m.name,
        token_id=m.token_id,
        salt=m.salt,
        token_hash=m.token_hash,
        created_at=m.created_at,
        status=AdminStatus(m.status),
        revoked_at=m.revoked_at,
    )


def _code_record(m: RegistrationCodeModel) -> RegistrationCodeRecord:
    return RegistrationCodeRecord(
        code=m.code,
        created_by=m.created_by,
        created_at=m.created_at,
        expires_at=m.expires_at,
        used_at=m.used_at,
    )


def _device_record(m: DeviceModel) -> DeviceRecord:
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


def _cert_record(m: CertificateModel) -> CertificateRecord:
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


def _audit_entry(m: AuditModel) -> AuditEntry:
    return AuditEntry(
        id=m.id,
        at=m.at,
        actor=m.actor,
        action=m.action,
        target=m.target,
        details=MappingProxyType(json.loads(m.details)),
    )


def _verdict(
    ca_status: str | None,
    ca_jit: bool,
    cert_state: str | None,
    cert_issuer: str | None,
    cert_device: str | None,
    device_status: str | None,
    issuer: str,
    serial: str,
    *,
    device_ca: str | None = None,
) -> ConnectionVerdict:
    """The pure decision behind ``check_connection`` (testable without a database).

    A serial belongs to the CA that first vouched for it: a device bound to another CA is
    refused whatever this CA signed, and JIT only creates devices (an existing device is
    renewed under JIT only by its own CA).
    """

    def deny(code: VerdictCode, reason: str) -> ConnectionVerdict:
        return ConnectionVerdict(allowed=False, reason_code=code, reason=reason)

    if ca_status is None:
        return deny(VerdictCode.CA_NOT_REGISTERED, f"issuer {issuer} is not a registered CA")
    if ca_status != CAStatus.ACTIVE.value:
        return deny(VerdictCode.CA_INACTIVE, f"issuer {issuer} is {ca_status}")
    bound_elsewhere = device_status is not None and device_ca != issuer
    if bound_elsewhere and (device_ca is not None or cert_state is None):
        owner = "no CA (register its certificate explicitly)" if device_ca is None else device_ca
        return deny(
            VerdictCode.SERIAL_BOUND_TO_OTHER_CA,
            f"device {serial!r} belongs to {owner}, not to issuer {issuer}",
        )
    if cert_state is None:
        if not ca_jit:
            return deny(
                VerdictCode.CERTIFICATE_UNKNOWN,
                "certificate is not registered and its CA does not allow auto-registration",
            )
        if device_status == DeviceStatus.DISABLED.value:
            return deny(VerdictCode.DEVICE_DISABLED, "device is disabled")
        return ConnectionVerdict(
            allowed=True,
            reason_code=VerdictCode.JIT_ALLOWED,
            reason="unknown certificate under a CA that allows auto-registration",
        )
    if cert_issuer != issuer:
        return deny(VerdictCode.CERTIFICATE_UNKNOWN, "certificate is registered under another CA")
    if cert_state == CertState.REVOKED.value:
        return deny(VerdictCode.CERTIFICATE_REVOKED, "certificate is revoked")
    if cert_state != CertState.ACTIVE.value:
        return deny(VerdictCode.CERTIFICATE_INACTIVE, f"certificate is {cert_state}")
    if cert_device is None and device_status is None:
        return deny(VerdictCode.DEVICE_UNKNOWN, f"no device {serial!r} is registered")
    if cert_device != serial:
        return deny(VerdictCode.DEVICE_MISMATCH, f"certificate is not bound to device {serial!r}")
    if device_status == DeviceStatus.DISABLED.value:
        return deny(VerdictCode.DEVICE_DISABLED, "device is disabled")
    return ConnectionVerdict(allowed=True, reason_code=VerdictCode.OK, reason="ok")
