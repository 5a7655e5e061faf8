"""The gateway's question: may this certificate connect as this device?

Two halves, kept apart on purpose: ``decide``, the pure decision over what the database said
(tested branch by branch without a database, ``tests/cloud/registry/test_verdict.py``), and
``check_connection``, one statement that reads everything the decision needs plus the audit
log's position, on a plain connection (every handshake waits for it).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import Select, String, bindparam, func, select
from sqlalchemy.exc import DBAPIError

from tether.cloud.registry.base import RegistryBase, check_fingerprint, check_serial
from tether.cloud.registry.models import AuditModel, CAModel, CertificateModel, DeviceModel
from tether.cloud.registry.records import (
    CAStatus,
    CertState,
    ConnectionVerdict,
    DeviceStatus,
    VerdictCode,
)


def decide(
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


class Verdicts(RegistryBase):
    """The one read every handshake makes."""

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
        fingerprint = check_fingerprint(cert_fingerprint)
        serial = check_serial(device_serial)
        issuer = check_fingerprint(issuer_fingerprint)
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
        verdict = decide(
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
