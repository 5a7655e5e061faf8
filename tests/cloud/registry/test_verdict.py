"""The pure connection decision (``verdict.decide``), every branch, without a database.

``test_check_connection.py`` proves the one query feeds it the right facts from a real
database; here each fact pattern is named and its verdict pinned, so a change to the order of
the checks shows up as a failing case, not as a subtle shift in the gateway's refusals.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from tether.cloud.registry import ConnectionVerdict, VerdictCode
from tether.cloud.registry.verdict import decide

ISSUER = "a" * 64
OTHER = "b" * 64
SERIAL = "d1"


@dataclass(frozen=True)
class Facts:
    """What the one statement read; the default is a registered, active, bound certificate."""

    ca_status: str | None = "active"
    ca_jit: bool = False
    cert_state: str | None = "active"
    cert_issuer: str | None = ISSUER
    cert_device: str | None = SERIAL
    device_status: str | None = "enabled"
    device_ca: str | None = ISSUER

    def verdict(self) -> ConnectionVerdict:
        return decide(
            self.ca_status,
            self.ca_jit,
            self.cert_state,
            self.cert_issuer,
            self.cert_device,
            self.device_status,
            ISSUER,
            SERIAL,
            device_ca=self.device_ca,
        )


GOOD = Facts()
UNKNOWN_CERT = replace(GOOD, cert_state=None, cert_issuer=None, cert_device=None)
NEW_DEVICE = replace(UNKNOWN_CERT, device_status=None, device_ca=None)

CASES: dict[str, tuple[Facts, VerdictCode]] = {
    "ok": (GOOD, VerdictCode.OK),
    "ca not registered": (replace(GOOD, ca_status=None), VerdictCode.CA_NOT_REGISTERED),
    "ca inactive": (replace(GOOD, ca_status="inactive"), VerdictCode.CA_INACTIVE),
    "ca revoked": (replace(GOOD, ca_status="revoked"), VerdictCode.CA_INACTIVE),
    "ca check comes first": (
        replace(GOOD, ca_status=None, cert_state="revoked", device_status="disabled"),
        VerdictCode.CA_NOT_REGISTERED,
    ),
    "serial bound to another ca": (
        replace(GOOD, device_ca=OTHER),
        VerdictCode.SERIAL_BOUND_TO_OTHER_CA,
    ),
    "serial bound to another ca, even with a revoked cert": (
        replace(GOOD, device_ca=OTHER, cert_state="revoked"),
        VerdictCode.SERIAL_BOUND_TO_OTHER_CA,
    ),
    "jit cannot take over another ca's device": (
        replace(UNKNOWN_CERT, ca_jit=True, device_ca=OTHER),
        VerdictCode.SERIAL_BOUND_TO_OTHER_CA,
    ),
    "jit cannot take over an unbound device": (
        replace(UNKNOWN_CERT, ca_jit=True, device_ca=None),
        VerdictCode.SERIAL_BOUND_TO_OTHER_CA,
    ),
    "unbound device with a registered cert goes on to the cert checks": (
        replace(GOOD, device_ca=None),
        VerdictCode.OK,
    ),
    "unknown cert, no jit": (UNKNOWN_CERT, VerdictCode.CERTIFICATE_UNKNOWN),
    "unknown cert, new device, jit": (replace(NEW_DEVICE, ca_jit=True), VerdictCode.JIT_ALLOWED),
    "unknown cert, own device, jit renews": (
        replace(UNKNOWN_CERT, ca_jit=True),
        VerdictCode.JIT_ALLOWED,
    ),
    "unknown cert, own disabled device, jit": (
        replace(UNKNOWN_CERT, ca_jit=True, device_status="disabled"),
        VerdictCode.DEVICE_DISABLED,
    ),
    "cert registered under another ca": (
        replace(GOOD, cert_issuer=OTHER),
        VerdictCode.CERTIFICATE_UNKNOWN,
    ),
    "cert revoked": (replace(GOOD, cert_state="revoked"), VerdictCode.CERTIFICATE_REVOKED),
    "cert inactive": (replace(GOOD, cert_state="inactive"), VerdictCode.CERTIFICATE_INACTIVE),
    "cert pending": (replace(GOOD, cert_state="pending"), VerdictCode.CERTIFICATE_INACTIVE),
    "no device at all": (
        replace(GOOD, cert_device=None, device_status=None, device_ca=None),
        VerdictCode.DEVICE_UNKNOWN,
    ),
    "cert of another device": (replace(GOOD, cert_device="d2"), VerdictCode.DEVICE_MISMATCH),
    "cert bound to no device, device exists": (
        replace(GOOD, cert_device=None),
        VerdictCode.DEVICE_MISMATCH,
    ),
    "device disabled": (replace(GOOD, device_status="disabled"), VerdictCode.DEVICE_DISABLED),
}


@pytest.mark.parametrize(("facts", "code"), list(CASES.values()), ids=list(CASES))
def test_each_fact_pattern_gets_its_code(facts: Facts, code: VerdictCode) -> None:
    verdict = facts.verdict()
    assert verdict.reason_code is code
    assert verdict.allowed is (code in (VerdictCode.OK, VerdictCode.JIT_ALLOWED))
    assert verdict.reason
    assert verdict.audit_position == 0  # the query sets it, never the decision


def test_every_code_is_reachable() -> None:
    assert {code for _, code in CASES.values()} == set(VerdictCode)


def test_reasons_name_what_was_refused() -> None:
    assert ISSUER in replace(GOOD, ca_status=None).verdict().reason
    assert OTHER in replace(GOOD, device_ca=OTHER).verdict().reason
    assert "no CA" in replace(UNKNOWN_CERT, ca_jit=True, device_ca=None).verdict().reason
    assert repr(SERIAL) in replace(GOOD, cert_device="d2").verdict().reason
