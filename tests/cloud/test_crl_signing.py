"""The online CA's CRL is signed once, reused while current, re-signed on change or near expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from tests.support.pki import TestPKI
from tether.cloud.crl_signing import OnlineCrl
from tether.pki import RevokedEntry, Role


@pytest.fixture(scope="module")
def signer() -> OnlineCrl:
    ca = TestPKI("CRL Signing Root").ca(Role.DEVICE)
    return OnlineCrl(ca, validity=timedelta(days=7), resign_before=timedelta(days=1))


def _number(der: bytes) -> int:
    crl = x509.load_der_x509_crl(der)
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def test_reused_while_current_and_resigned_when_revocations_change(signer: OnlineCrl) -> None:
    at = datetime.now(UTC)
    first = signer.der([], now=at)
    assert signer.der([], now=at + timedelta(hours=1)) == first
    entry = RevokedEntry(0x1234, at, x509.ReasonFlags.key_compromise)
    changed = signer.der([entry], now=at + timedelta(hours=1))
    assert changed != first and _number(changed) > _number(first)
    crl = x509.load_der_x509_crl(changed)
    assert crl.get_revoked_certificate_by_serial_number(0x1234) is not None
    assert crl.is_signature_valid(signer.ca.certificate.public_key())  # type: ignore[arg-type]
    other_reason = RevokedEntry(0x1234, at, x509.ReasonFlags.superseded)
    assert signer.der([other_reason], now=at + timedelta(hours=1)) != changed


def test_resigned_before_it_expires(signer: OnlineCrl) -> None:
    at = datetime.now(UTC)
    current = signer.der([], now=at)
    next_update = x509.load_der_x509_crl(current).next_update_utc
    assert next_update is not None
    # Inside the re-signing margin (less than a day left): a new CRL, valid a week from now.
    later = signer.der([], now=next_update - timedelta(hours=23))
    assert later != current


def test_the_margin_must_be_shorter_than_the_validity(signer: OnlineCrl) -> None:
    with pytest.raises(ValueError, match="re-signed before it expires"):
        OnlineCrl(signer.ca, validity=timedelta(days=1), resign_before=timedelta(days=1))
