"""CSRs assembled around a signature made elsewhere: cryptography and openssl accept them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.softhsm import Token
from tether.errors import InvalidInputError, PolicyViolationError, SecureElementError
from tether.pki.errors import InvalidSerialError
from tether.pki.signer import SoftwareSigner
from tether.secure_element import Pkcs11SecureElement, SecureElement, build_csr
from tether.secure_element.base import spki_der
from tether.secure_element.errors import UnsupportedKeyError

SERIALS = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def openssl_verify(csr: x509.CertificateSigningRequest, tmp_path: Path) -> None:
    path = tmp_path / "req.pem"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(
        ["openssl", "req", "-verify", "-noout", "-in", str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stdout + result.stderr


def assert_profile(csr: x509.CertificateSigningRequest, serial: str) -> None:
    assert csr.is_signature_valid
    assert csr.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial)])
    assert csr.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert list(csr.attributes) == []
    assert len(csr.extensions) == 0


def test_csr_around_secure_element_signature(element: SecureElement, tmp_path: Path) -> None:
    public = element.generate_key("device")
    csr = build_csr(element.signer("device"), "SN-000123")
    assert_profile(csr, "SN-000123")
    assert spki_der(csr.public_key()) == spki_der(public)  # type: ignore[arg-type]
    openssl_verify(csr, tmp_path)


def test_csr_with_software_signer(tmp_path: Path) -> None:
    signer = SoftwareSigner(ec.generate_private_key(ec.SECP256R1()))
    csr = build_csr(signer, "unit.42_a-b")
    assert_profile(csr, "unit.42_a-b")
    openssl_verify(csr, tmp_path)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(serial=SERIALS)
def test_any_valid_serial_gives_a_valid_token_csr(token: Token, serial: str) -> None:
    with Pkcs11SecureElement.open(token.module, token.label, token.pin) as element:
        if "device" not in element.labels():
            element.generate_key("device")
        csr = build_csr(element.signer("device"), serial)
    assert_profile(csr, serial)
    # Round trip through DER: what a CA receives parses to the same request.
    again = x509.load_der_x509_csr(csr.public_bytes(serialization.Encoding.DER))
    assert again.is_signature_valid
    assert again.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == serial


@pytest.mark.parametrize(
    "serial", ["", "-lead", ".lead", "has space", "a" * 65, "é", "x/y", "a\nb", "CN=x,O=y"]
)
def test_invalid_serial_is_refused(serial: str) -> None:
    signer = SoftwareSigner(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(InvalidSerialError) as info:
        build_csr(signer, serial)
    assert isinstance(info.value, InvalidInputError)
    assert info.value.code == "pki_invalid_serial"


class _WrongKeySigner:
    """Claims one public key, signs with another: the CSR must not come out."""

    def __init__(self) -> None:
        self._claimed = ec.generate_private_key(ec.SECP256R1()).public_key()
        self._actual = ec.generate_private_key(ec.SECP256R1())

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._claimed

    def sign(self, data: bytes) -> bytes:
        return self._actual.sign(data, ec.ECDSA(hashes.SHA256()))


def test_signer_whose_signature_does_not_match_its_key_is_refused() -> None:
    with pytest.raises(SecureElementError) as info:
        build_csr(_WrongKeySigner(), "SN-1")
    assert info.value.code == "se_operation_failed"


class _P384Signer:
    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP384R1())

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))


def test_non_p256_signer_is_refused() -> None:
    with pytest.raises(UnsupportedKeyError) as info:
        build_csr(_P384Signer(), "SN-1")
    assert isinstance(info.value, PolicyViolationError)


def test_rsa_key_is_refused() -> None:
    class RsaSigner:
        def public_key(self) -> rsa.RSAPublicKey:
            return rsa.generate_private_key(65537, 2048).public_key()

        def sign(self, data: bytes) -> bytes:
            return b""

    with pytest.raises(UnsupportedKeyError):
        build_csr(RsaSigner(), "SN-1")  # type: ignore[arg-type]
