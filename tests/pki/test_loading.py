"""Intake of certificates and CSRs from outside: PEM or DER, size-limited, never a trace."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.pki.util import device_csr
from tether.errors import InvalidInputError
from tether.pki import (
    MAX_INPUT_BYTES,
    IssuingCA,
    RootCA,
    load_certificate,
    load_certificates,
    load_csr,
    sha256_fingerprint,
)
from tether.pki.errors import InputTooLargeError, MalformedInputError

VALID_CSR = device_csr("dev-001")
VALID_CSR_DER = VALID_CSR.public_bytes(Encoding.DER)
VALID_CSR_PEM = VALID_CSR.public_bytes(Encoding.PEM)


def test_certificate_loads_from_pem_and_der(root: RootCA) -> None:
    pem = root.certificate.public_bytes(Encoding.PEM)
    der = root.certificate.public_bytes(Encoding.DER)
    assert load_certificate(pem) == root.certificate
    assert load_certificate(der) == root.certificate
    assert load_certificate(b"\n  " + pem) == root.certificate


def test_a_pem_bundle_is_one_call_away(root: RootCA, device_ca: IssuingCA) -> None:
    bundle = device_ca.certificate.public_bytes(Encoding.PEM) + root.certificate.public_bytes(
        Encoding.PEM
    )
    assert load_certificates(bundle) == [device_ca.certificate, root.certificate]
    with pytest.raises(MalformedInputError, match="expected one certificate"):
        load_certificate(bundle)


def test_csr_loads_from_pem_and_der() -> None:
    assert load_csr(VALID_CSR_PEM) == VALID_CSR
    assert load_csr(VALID_CSR_DER) == VALID_CSR


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\n",
        b"\x30\x82\x01",
    ],
)
def test_malformed_certificates_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedInputError) as info:
        load_certificate(data)
    assert isinstance(info.value, InvalidInputError)


def test_truncated_der_certificate_is_refused(root: RootCA) -> None:
    der = root.certificate.public_bytes(Encoding.DER)
    for cut in (1, 10, len(der) // 2, len(der) - 1):
        with pytest.raises(MalformedInputError):
            load_certificate(der[:cut])


def test_truncated_pem_csr_is_refused() -> None:
    with pytest.raises(MalformedInputError):
        load_csr(VALID_CSR_PEM[: len(VALID_CSR_PEM) // 2])


def test_a_certificate_is_not_a_csr(root: RootCA) -> None:
    with pytest.raises(MalformedInputError):
        load_csr(root.certificate.public_bytes(Encoding.PEM))


def test_oversized_input_is_refused_before_parsing() -> None:
    big = VALID_CSR_PEM + b"\n" * (MAX_INPUT_BYTES + 1 - len(VALID_CSR_PEM))
    assert len(big) == MAX_INPUT_BYTES + 1
    with pytest.raises(InputTooLargeError) as info:
        load_csr(big)
    assert info.value.code == "pki_input_too_large"
    with pytest.raises(InputTooLargeError):
        load_certificate(big)


def test_input_at_the_limit_is_still_parsed() -> None:
    padded = VALID_CSR_PEM + b"\n" * (MAX_INPUT_BYTES - len(VALID_CSR_PEM))
    assert len(padded) == MAX_INPUT_BYTES
    assert load_csr(padded) == VALID_CSR


def test_fingerprint_is_lowercase_sha256_hex(root: RootCA) -> None:
    from cryptography.hazmat.primitives import hashes

    fingerprint = sha256_fingerprint(root.certificate)
    assert fingerprint == root.certificate.fingerprint(hashes.SHA256()).hex()
    assert len(fingerprint) == 64 and fingerprint == fingerprint.lower()


def _issue_or_refuse(data: bytes, ca: IssuingCA) -> x509.Certificate | None:
    try:
        return ca.issue_device_certificate(load_csr(data), "dev-001")
    except InvalidInputError:
        return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_csr_intake(device_ca: IssuingCA, data: bytes) -> None:
    result = _issue_or_refuse(data, device_ca)
    assert result is None or isinstance(result, x509.Certificate)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID_CSR_DER) - 1), st.integers(1, 255)),
        min_size=1,
        max_size=4,
    ),
    st.integers(0, len(VALID_CSR_DER)),
)
def test_mutated_csrs_give_a_certificate_or_a_clear_refusal(
    device_ca: IssuingCA, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(VALID_CSR_DER)
    for index, mask in flips:
        data[index] ^= mask
    mutated = bytes(data[: max(cut, 1)])
    result = _issue_or_refuse(mutated, device_ca)
    if result is not None:
        # Anything that got through must still be the Tether profile for the right key.
        assert result.subject.rfc4514_string() == "CN=dev-001"
        assert result.public_key() == load_csr(mutated).public_key()
