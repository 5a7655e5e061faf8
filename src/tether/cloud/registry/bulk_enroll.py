"""The storm path of ``record_enrollment``: a whole group of new-device enrollments written
with a handful of Core statements instead of ~20 ORM round trips each.

``bulk_record`` takes the group the :class:`~tether.cloud.registry.batch.GroupCommitter`
collected and handles the common case of a provisioning storm: a token or claim enrollment of
a serial no device has yet, not seen before. For those it reads the tokens, claims, devices
and earlier requests once (``IN`` lists), checks each, then inserts the devices, certificates
and enrollments and their audit rows with one multi-row ``INSERT`` per table (``RETURNING``
the ids) and marks the tokens spent with one ``UPDATE``. Everything else (a replay, an
existing device, a renewal, a serial twice in one group, a write with the hook's labels) is
returned as ``None`` and goes
through the one-by-one path in its own savepoint, so both paths apply the same rules. A
refusal found here is that request's error and changes nothing of it. The committer commits
once for the group, and only then is any certificate returned.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from tether.cloud.registry.audit import AuditAction, _check_details
from tether.cloud.registry.cas import load_ca
from tether.cloud.registry.certificates import (
    _serial_hex,
    certificate_fingerprint,
    check_issued_by,
)
from tether.cloud.registry.errors import CertificateListedOnCRLError
from tether.cloud.registry.models import (
    AuditModel,
    CertificateModel,
    ClaimModel,
    DeviceModel,
    EnrollmentModel,
    EnrollmentTokenModel,
    PublishedCRLModel,
)
from tether.cloud.registry.records import CertState, DeviceStatus, Provisioning
from tether.errors import TetherError

Outcome = object  # an EnrollmentRecord, a TetherError, or None (not handled here)


def bulk_record(session: Session, writes: Sequence[object], now: datetime) -> list[Outcome]:
    """Record what it can of ``writes`` (EnrollmentWrite) in bulk; None for the rest."""
    from tether.cloud.registry.enrollment import (
        ClaimPolicyError,
        EnrollmentRecord,
        EnrollmentTokenError,
        EnrollmentWrite,
        _check_token,
        _claim_record,
    )

    items: list[EnrollmentWrite] = list(writes)  # type: ignore[arg-type]
    out: list[Outcome] = [None] * len(items)
    serial_counts = Counter(w.serial for w in items)
    candidates = [
        i for i, w in enumerate(items)
        if w.predecessor is None and (w.token_hash or w.claim) and serial_counts[w.serial] == 1
        and not w.attributes and not w.groups  # labels: one by one (labels.apply_labels)
        and len({x.operational_ca for x in items}) == 1
    ]  # fmt: skip
    if not candidates:
        return out
    digests = {items[i].request_digest for i in candidates}
    seen = set(
        session.scalars(
            select(EnrollmentModel.request_digest).where(
                EnrollmentModel.request_digest.in_(digests)
            )
        )
    )
    serials = {items[i].serial for i in candidates}
    existing = set(
        session.scalars(select(DeviceModel.serial).where(DeviceModel.serial.in_(serials)))
    )
    candidates = [
        i for i in candidates
        if items[i].request_digest not in seen and items[i].serial not in existing
    ]  # fmt: skip
    if not candidates:
        return out
    ca = load_ca(session, items[candidates[0]].operational_ca)
    published = session.scalar(
        select(PublishedCRLModel.der).where(PublishedCRLModel.issuer == ca.fingerprint)
    )
    crl = None if published is None else x509.load_der_x509_crl(published)  # once per group
    tokens = {
        t.token_hash: t
        for t in session.scalars(
            select(EnrollmentTokenModel).where(
                EnrollmentTokenModel.token_hash.in_(
                    {items[i].token_hash for i in candidates if items[i].token_hash}
                )
            )
        )
    }
    claims = {
        c.name: c
        for c in session.scalars(
            select(ClaimModel).where(
                ClaimModel.name.in_({items[i].claim for i in candidates if items[i].claim})
            )
        )
    }
    accepted: list[int] = []
    for i in candidates:
        write = items[i]
        try:
            check_issued_by(write.certificate, ca)
            serial_number = write.certificate.serial_number
            if crl is not None and crl.get_revoked_certificate_by_serial_number(serial_number):
                raise CertificateListedOnCRLError("the certificate's serial is on the CRL")
            if write.token_hash is not None:
                token = tokens.get(write.token_hash)
                _check_token(token, now)
                assert token is not None
                if token.serial != write.serial:
                    raise EnrollmentTokenError(
                        f"this enrollment token is for {token.serial!r}, not {write.serial!r}"
                    )
                token.used_at = now  # a second use in this group is refused below
            if write.claim is not None:
                claim = claims.get(write.claim)
                if claim is None:
                    out[i] = None
                    continue
                refusal = _claim_record(claim).refusal(write.serial, now)
                if refusal is not None:
                    raise ClaimPolicyError(refusal + "; nothing was issued")
                claim.enrollments += 1
        except TetherError as exc:
            out[i] = exc
            continue
        accepted.append(i)
    if not accepted:
        return out
    device_ids = dict(
        session.execute(
            insert(DeviceModel).returning(DeviceModel.serial, DeviceModel.id),
            [
                {
                    "serial": items[i].serial, "status": DeviceStatus.ENABLED.value,
                    "provisioning": Provisioning.CSR.value, "ca_id": ca.id, "first_seen": None,
                    "last_seen": None, "created_at": now, "updated_at": now,
                }
                for i in accepted
            ],
        ).all()
    )  # fmt: skip
    rows = []
    for i in accepted:
        cert = items[i].certificate
        rows.append({
            "fingerprint": certificate_fingerprint(cert), "serial_number": _serial_hex(cert),
            "subject": cert.subject.rfc4514_string(), "issuer_id": ca.id,
            "device_id": device_ids[items[i].serial], "not_before": cert.not_valid_before_utc,
            "not_after": cert.not_valid_after_utc, "state": CertState.ACTIVE.value,
            "revocation_reason": None, "revoked_at": None,
            "pem": cert.public_bytes(Encoding.PEM).decode("ascii"),
            "created_at": now, "updated_at": now,
        })  # fmt: skip
    cert_ids = dict(
        session.execute(
            insert(CertificateModel).returning(CertificateModel.fingerprint, CertificateModel.id),
            rows,
        ).all()
    )
    enrollment_rows, audit_rows = [], []
    for i, row in zip(accepted, rows, strict=True):
        write = items[i]
        attributes = json.dumps(dict(write.attributes), sort_keys=True)
        enrollment_rows.append({
            "request_digest": write.request_digest, "serial": write.serial,
            "credential": write.credential, "result": write.result,
            "certificate_id": cert_ids[row["fingerprint"]], "attributes": attributes,
            "created_at": now,
        })  # fmt: skip
        for action, target, details in (
            (AuditAction.DEVICE_ADD, write.serial, {"provisioning": Provisioning.CSR.value}),
            (AuditAction.CERTIFICATE_ADD, row["fingerprint"], {
                "serial_number": row["serial_number"], "issuer": ca.fingerprint,
                "device": write.serial, "state": CertState.ACTIVE.value,
            }),
            (f"enrollment.{write.result}", write.serial, {
                "credential": write.credential, "certificate": row["fingerprint"],
                "predecessor": None, "attributes": len(write.attributes),
            }),
        ):  # fmt: skip
            audit_rows.append({
                "at": now, "actor": write.actor, "action": str(action), "target": target,
                "details": _check_details(details),
            })  # fmt: skip
        out[i] = EnrollmentRecord(
            request_digest=write.request_digest,
            serial=write.serial,
            credential=write.credential,
            result=write.result,
            certificate_pem=str(row["pem"]),
            certificate_fingerprint=str(row["fingerprint"]),
            attributes=dict(write.attributes),
            created_at=now,
        )
    session.execute(insert(EnrollmentModel), enrollment_rows)
    session.execute(insert(AuditModel), audit_rows)
    spent = [tokens[items[i].token_hash].id for i in accepted if items[i].token_hash]  # type: ignore[index]
    if spent:
        session.execute(
            update(EnrollmentTokenModel)
            .where(EnrollmentTokenModel.id.in_(spent))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
    session.flush()
    return out
