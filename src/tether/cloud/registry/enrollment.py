"""Enrollment's records: claims, one-time tokens, enrollments and certificate succession.

The enroll operation itself (CSR checks, the hook, signing) lives in
:mod:`tether.cloud.enrollment`; this aggregate is its store. :meth:`Enrollments.record_enrollment`
is the one transaction that turns a signed certificate into a device's operational identity:
it re-checks the birth credential under the write lock (a token is spent once, a claim's count
is not exceeded by two racing requests), binds or moves the serial to the operational CA (the
one path besides ``rebind_device`` that may move a serial; audited as
``device.enroll_rebind``), records the
certificate, its succession and the enrollment row keyed by the request, all with their audit
rows. A second request with the same key finds the first one's row and gets its result back.

Longer than ~400 lines on purpose: claims, tokens, enrollments and succession are one
aggregate whose rules are checked inside the one write transaction; the value objects and
errors live in ``enrollment_records.py``, the storm path in ``bulk_enroll.py``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from tether.cloud.registry.audit import AuditAction, change_status, write_audit
from tether.cloud.registry.base import RegistryBase, check_actor, check_fingerprint, check_serial
from tether.cloud.registry.batch import GroupCommitter
from tether.cloud.registry.bulk_enroll import bulk_record
from tether.cloud.registry.cas import load_ca
from tether.cloud.registry.certificates import (
    _audit_added,
    _load_cert,
    check_issued_by,
    insert_certificate,
)
from tether.cloud.registry.devices import bound_elsewhere, insert_device
from tether.cloud.registry.enrollment_records import (
    ClaimExistsError,
    ClaimNotFoundError,
    ClaimPolicyError,
    ClaimRecord,
    EnrollmentDeviceDisabledError,
    EnrollmentRecord,
    EnrollmentTokenError,
    EnrollmentTokenUsedError,
    EnrollmentWrite,
    SerialAlreadyEnrolledError,
)
from tether.cloud.registry.errors import InvalidRegistryInputError
from tether.cloud.registry.labels import apply_labels, check_labels
from tether.cloud.registry.models import (
    CAModel,
    CertificateModel,
    CertificateSuccessionModel,
    ClaimModel,
    DeviceModel,
    EnrollmentModel,
    EnrollmentTokenModel,
)
from tether.cloud.registry.records import CertState, DeviceStatus, Provisioning

# The serial moved to the operational CA by enrollment. Not ``device.rebind``: the gateway's
# feed ends every session of the old CA on that, and it would race the enroll reply on the
# birth session; the enrollment handler ends that session itself once it has replied.
ENROLL_REBIND = "device.enroll_rebind"
_COMMITTER_LOCK = threading.Lock()


def _claim_record(model: ClaimModel) -> ClaimRecord:
    serials = None if model.serials is None else tuple(json.loads(model.serials))
    return ClaimRecord(
        name=model.name,
        certificate_fingerprint=model.certificate.fingerprint,
        serials=serials,
        max_enrollments=model.max_enrollments,
        enrollments=model.enrollments,
        expires_at=model.expires_at,
    )


def _enrollment_record(model: EnrollmentModel, *, replayed: bool) -> EnrollmentRecord:
    return EnrollmentRecord(
        request_digest=model.request_digest,
        serial=model.serial,
        credential=model.credential,
        result=model.result,
        certificate_pem=model.certificate.pem,
        certificate_fingerprint=model.certificate.fingerprint,
        attributes=json.loads(model.attributes),
        created_at=model.created_at,
        replayed=replayed,
    )


class Enrollments(RegistryBase):
    """Claims, enrollment tokens, enrollments and certificate succession."""

    def add_claim(
        self,
        name: str,
        certificate: x509.Certificate,
        *,
        issuer_fingerprint: str,
        serials: Sequence[str] | None,
        max_enrollments: int | None,
        expires_at: datetime,
        actor: str,
    ) -> ClaimRecord:
        """Record a claim certificate (bound to no device) and its policy; audited."""
        actor = check_actor(actor)
        issuer_fingerprint = check_fingerprint(issuer_fingerprint)
        listed = None if serials is None else [check_serial(s) for s in serials]
        if max_enrollments is not None and max_enrollments < 1:
            raise InvalidRegistryInputError("A claim's max_enrollments must be at least 1.")
        now = self._clock()
        with self._write() as session:
            if session.scalar(select(ClaimModel.id).where(ClaimModel.name == name)):
                raise ClaimExistsError(f"A claim named {name!r} already exists.")
            ca = load_ca(session, issuer_fingerprint)
            check_issued_by(certificate, ca)
            cert = insert_certificate(session, certificate, ca, None, CertState.ACTIVE, now)
            _audit_added(session, now, actor, cert, issuer_fingerprint, None, CertState.ACTIVE)
            model = ClaimModel(
                name=name,
                certificate=cert,
                serials=None if listed is None else json.dumps(listed),
                max_enrollments=max_enrollments,
                enrollments=0,
                expires_at=expires_at,
                created_by=actor,
                created_at=now,
            )
            session.add(model)
            session.flush()
            details = {
                "certificate": cert.fingerprint,
                "serials": None if listed is None else len(listed),
                "max_enrollments": max_enrollments,
                "expires_at": expires_at.isoformat(),
            }
            write_audit(session, now, actor, "claim.add", name, details)
            return _claim_record(model)

    def list_claims(self) -> list[ClaimRecord]:
        """Every claim and its policy and use so far, by name."""
        with self._read() as session:
            models = session.scalars(select(ClaimModel).order_by(ClaimModel.name))
            return [_claim_record(m) for m in models]

    def claim_for_certificate(self, fingerprint: str) -> ClaimRecord | None:
        """The claim whose certificate this is, or None (the gateway asks on a handshake)."""
        fingerprint = check_fingerprint(fingerprint)
        with self._read() as session:
            model = session.scalar(
                select(ClaimModel)
                .join(CertificateModel, ClaimModel.certificate_id == CertificateModel.id)
                .where(CertificateModel.fingerprint == fingerprint)
            )
            return None if model is None else _claim_record(model)

    def in_enrollment_grace(self, fingerprint: str) -> bool:
        """Whether this certificate was succeeded and its overlap has not ended yet.

        The gateway lets such a (birth) certificate connect *enroll-only* after its serial
        moved to the operational CA, so a device whose enroll reply was lost can retry and
        get the same result instead of being stranded.
        """
        fingerprint = check_fingerprint(fingerprint)
        now = self._clock()
        with self._read() as session:
            return (
                session.scalar(
                    select(CertificateSuccessionModel.id)
                    .join(
                        CertificateModel,
                        CertificateSuccessionModel.predecessor_id == CertificateModel.id,
                    )
                    .where(
                        CertificateModel.fingerprint == fingerprint,
                        CertificateModel.state == CertState.ACTIVE.value,
                        CertificateSuccessionModel.retired_at.is_(None),
                        CertificateSuccessionModel.retire_at > now,
                    )
                    .limit(1)
                )
                is not None
            )

    def add_enrollment_token(
        self, token_hash: str, *, serial: str, expires_at: datetime, actor: str
    ) -> None:
        """Store a one-time token's hash for ``serial``; audited (the token is not)."""
        actor = check_actor(actor)
        serial = check_serial(serial)
        now = self._clock()
        with self._write() as session:
            session.add(
                EnrollmentTokenModel(
                    token_hash=token_hash,
                    serial=serial,
                    expires_at=expires_at,
                    used_at=None,
                    created_by=actor,
                    created_at=now,
                )
            )
            session.flush()
            details = {"expires_at": expires_at.isoformat(), "token": token_hash[:12]}
            write_audit(session, now, actor, "enrollment_token.add", serial, details)

    def enrollment_token_serial(self, token_hash: str) -> str:
        """The serial a valid, unspent token is for; EnrollmentTokenError otherwise.

        A spent token raises EnrollmentTokenUsedError: the caller looks for the enrollment
        that spent it first (a retry), so this is reached only by a replay.
        """
        now = self._clock()
        with self._read() as session:
            token = session.scalar(
                select(EnrollmentTokenModel).where(EnrollmentTokenModel.token_hash == token_hash)
            )
            _check_token(token, now)
            assert token is not None
            return token.serial

    def find_enrollment(self, request_digest: str) -> EnrollmentRecord | None:
        """The stored result of an earlier request with this key, or None."""
        with self._read() as session:
            model = session.scalar(
                select(EnrollmentModel).where(EnrollmentModel.request_digest == request_digest)
            )
            return None if model is None else _enrollment_record(model, replayed=True)

    def enrollment_precheck(
        self, request_digest: str, token_hash: str | None
    ) -> tuple[EnrollmentRecord | None, str | None]:
        """One read before signing: an earlier request's result, else the token's serial.

        ``(record, None)`` for a retry (the token is not looked at: it was spent by that very
        request); ``(None, serial)`` for a valid, unspent token; ``(None, None)`` without a
        token. Raises what ``enrollment_token_serial`` raises for a bad token. The write
        transaction checks both again; this read only keeps a refusal or a retry from
        costing a signature.
        """
        now = self._clock()
        try:
            # A plain connection, one statement each (no ORM session, no BEGIN/ROLLBACK): this
            # read is on every enrollment's path; the write transaction re-checks both.
            with self._single_statement_engine.connect() as connection:
                row = connection.execute(
                    select(
                        EnrollmentModel.serial, EnrollmentModel.credential,
                        EnrollmentModel.result, EnrollmentModel.attributes,
                        EnrollmentModel.created_at, CertificateModel.pem,
                        CertificateModel.fingerprint,
                    )
                    .join(CertificateModel, EnrollmentModel.certificate_id == CertificateModel.id)
                    .where(EnrollmentModel.request_digest == request_digest)
                ).first()  # fmt: skip
                token = None
                if row is None and token_hash is not None:
                    token = connection.execute(
                        select(
                            EnrollmentTokenModel.serial, EnrollmentTokenModel.used_at,
                            EnrollmentTokenModel.expires_at,
                        ).where(EnrollmentTokenModel.token_hash == token_hash)
                    ).first()  # fmt: skip
        except DBAPIError as exc:
            raise self._unavailable(exc) from exc
        if row is not None:
            record = EnrollmentRecord(
                request_digest=request_digest, serial=row.serial, credential=row.credential,
                result=row.result, certificate_pem=row.pem,
                certificate_fingerprint=row.fingerprint, attributes=json.loads(row.attributes),
                created_at=row.created_at, replayed=True,
            )  # fmt: skip
            return record, None
        if token_hash is None:
            return None, None
        _check_token(token, now)  # type: ignore[arg-type] (a row has the model's columns)
        assert token is not None
        return None, str(token.serial)

    def record_enrollment(self, write: EnrollmentWrite) -> EnrollmentRecord:
        """Record an issued operational certificate: all or nothing (see the module docstring).

        Returns the earlier request's record (``replayed``) if one with the same key exists.
        Raises EnrollmentTokenUsedError, ClaimPolicyError, SerialBoundError,
        EnrollmentDeviceDisabledError and the refusals of ``add_certificate``. Concurrent
        callers share commits (``registry/batch.py``); it returns only once committed.
        """
        actor = check_actor(write.actor)
        serial = check_serial(write.serial)
        return self._group_commit().submit(
            lambda session: self._record_in(session, write, serial, actor, self._clock()),
            bulk_item=write,
        )

    def _group_commit(self) -> GroupCommitter:
        committer = getattr(self, "_committer", None)
        if committer is None:
            with _COMMITTER_LOCK:
                committer = getattr(self, "_committer", None)
                if committer is None:
                    committer = self._committer = GroupCommitter(
                        self,
                        bulk=lambda session, writes: bulk_record(session, writes, self._clock()),
                    )
        return committer

    def _record_in(
        self, session: Session, write: EnrollmentWrite, serial: str, actor: str, now: datetime
    ) -> EnrollmentRecord:
        existing = session.scalar(
            select(EnrollmentModel).where(EnrollmentModel.request_digest == write.request_digest)
        )
        if existing is not None:
            return _enrollment_record(existing, replayed=True)
        ca = load_ca(session, check_fingerprint(write.operational_ca))
        check_issued_by(write.certificate, ca)
        self._spend_credential(session, write, serial, now)
        device = _device_for(session, write, serial, ca, actor, now)
        if write.groups or write.attributes:
            groups, attributes = check_labels(write.groups, write.attributes)
            apply_labels(session, device, groups, attributes, actor, now)
        cert = insert_certificate(session, write.certificate, ca, device, CertState.ACTIVE, now)
        _audit_added(session, now, actor, cert, ca.fingerprint, serial, CertState.ACTIVE)
        if write.predecessor is not None:
            old = _load_cert(session, check_fingerprint(write.predecessor))
            session.add(
                CertificateSuccessionModel(
                    predecessor_id=old.id,
                    successor_id=cert.id,
                    kind=write.result,
                    retire_at=now + write.overlap,
                    retired_at=None,
                )
            )
        model = EnrollmentModel(
            request_digest=write.request_digest,
            serial=serial,
            credential=write.credential,
            result=write.result,
            certificate=cert,
            attributes=json.dumps(dict(write.attributes), sort_keys=True),
            created_at=now,
        )
        session.add(model)
        session.flush()
        details: dict[str, str | int | None] = {
            "credential": write.credential,
            "certificate": cert.fingerprint,
            "predecessor": write.predecessor,
            "attributes": len(write.attributes),
        }
        write_audit(session, now, actor, f"enrollment.{write.result}", serial, details)
        return _enrollment_record(model, replayed=False)

    def _spend_credential(
        self, session: Session, write: EnrollmentWrite, serial: str, now: datetime
    ) -> None:
        if write.token_hash is not None:
            token = session.scalar(
                select(EnrollmentTokenModel).where(
                    EnrollmentTokenModel.token_hash == write.token_hash
                )
            )
            _check_token(token, now)
            assert token is not None
            if token.serial != serial:
                raise EnrollmentTokenError(
                    f"this enrollment token is for {token.serial!r}, not {serial!r}"
                )
            token.used_at = now
        if write.claim is not None:
            claim = session.scalar(select(ClaimModel).where(ClaimModel.name == write.claim))
            if claim is None:
                raise ClaimNotFoundError(f"No claim named {write.claim!r} exists.")
            refusal = _claim_record(claim).refusal(serial, now)
            if refusal is not None:
                raise ClaimPolicyError(refusal + "; nothing was issued")
            claim.enrollments += 1

    def retire_due(self, *, actor: str = "enrollment") -> list[str]:
        """Retire every predecessor whose overlap has ended: its state becomes inactive.

        Audited as a certificate state change, so the gateway's feed drops a session still
        using it and the next handshake is refused (``certificate_inactive``). Returns the
        retired fingerprints.
        """
        now = self._clock()
        retired: list[str] = []
        with self._write() as session:
            due = session.scalars(
                select(CertificateSuccessionModel)
                .where(
                    CertificateSuccessionModel.retired_at.is_(None),
                    CertificateSuccessionModel.retire_at <= now,
                )
                # Every gateway worker runs enrollment's clock: on PostgreSQL a row another
                # worker is retiring is skipped, not retired (and audited) twice. SQLite's one
                # writer already serialises the clocks.
                .with_for_update(skip_locked=True)
            ).all()
            for succession in due:
                old = session.get(CertificateModel, succession.predecessor_id)
                succession.retired_at = now
                if old is None or old.state != CertState.ACTIVE.value:
                    continue
                change_status(
                    session, old, "state", CertState.INACTIVE,
                    now=now, actor=actor, action=AuditAction.CERTIFICATE_STATE,
                    target=old.fingerprint,
                )  # fmt: skip
                retired.append(old.fingerprint)
        return retired

    def certificate_history(self, serial: str) -> list[tuple[str, str, str]]:
        """A device's successions, oldest first: (predecessor, successor, kind) fingerprints."""
        serial = check_serial(serial)
        with self._read() as session:
            device_id = select(DeviceModel.id).where(DeviceModel.serial == serial)
            rows = session.execute(
                select(CertificateSuccessionModel)
                .join(
                    CertificateModel,
                    CertificateSuccessionModel.successor_id == CertificateModel.id,
                )
                .where(CertificateModel.device_id == device_id.scalar_subquery())
                .order_by(CertificateSuccessionModel.id)
            ).scalars()
            history = []
            for row in rows:
                old = session.get(CertificateModel, row.predecessor_id)
                new = session.get(CertificateModel, row.successor_id)
                assert old is not None and new is not None
                history.append((old.fingerprint, new.fingerprint, row.kind))
            return history


def _check_token(token: EnrollmentTokenModel | None, now: datetime) -> None:
    if token is None:
        raise EnrollmentTokenError("this enrollment token is not known; ask for a new one")
    if token.used_at is not None:
        raise EnrollmentTokenUsedError(
            f"this enrollment token was used at {token.used_at:%Y-%m-%d %H:%M:%SZ}; a token "
            "enrolls once (a retry of that same request returns its result)"
        )
    if now >= token.expires_at:
        raise EnrollmentTokenError("this enrollment token has expired; ask for a new one")


def _device_for(
    session: Session,
    write: EnrollmentWrite,
    serial: str,
    ca: CAModel,
    actor: str,
    now: datetime,
) -> DeviceModel:
    """The device the certificate is for: new, or moved to the operational CA if allowed."""
    device = session.scalar(select(DeviceModel).where(DeviceModel.serial == serial))
    if device is None:
        return insert_device(session, serial, Provisioning.CSR, actor, now, ca=ca)
    if device.status == DeviceStatus.DISABLED.value:
        raise EnrollmentDeviceDisabledError(
            f"the device {serial!r} is disabled; enable it before it enrolls or renews"
        )
    owner = None if device.ca is None else device.ca.fingerprint
    if owner == ca.fingerprint:
        if write.may_reenroll:
            return device
        raise SerialAlreadyEnrolledError(
            f"the device {serial!r} is already enrolled under the operational CA; it renews "
            "with its current certificate (simplereenroll, $tether/renew) instead"
        )
    if owner is not None and owner != write.previous_owner:
        raise bound_elsewhere(serial, device, ca)
    device.ca = ca
    device.ca_id = ca.id
    device.updated_at = now
    details = {"from": owner, "to": ca.fingerprint}
    write_audit(session, now, actor, ENROLL_REBIND, serial, details)
    return device


__all__ = [
    "ENROLL_REBIND",
    "ClaimExistsError",
    "ClaimNotFoundError",
    "ClaimPolicyError",
    "ClaimRecord",
    "EnrollmentDeviceDisabledError",
    "EnrollmentRecord",
    "EnrollmentTokenError",
    "EnrollmentTokenUsedError",
    "EnrollmentWrite",
    "Enrollments",
    "SerialAlreadyEnrolledError",
]
