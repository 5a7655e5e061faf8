"""CA keys in a token: a root and a factory CA whose keys live in SoftHSM2 sign for real.

``tether.pki`` builds each to-be-signed structure, the token signs it (CKM_ECDSA over a host
SHA-256 digest), the DER is assembled and checked with ``cryptography``; OpenSSL, a verifier
no one here wrote, must accept the resulting chain and CRL.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.softhsm import Token
from tether.pki import RevokedEntry, Role, RootCA, verify_chain
from tether.pki.authority import IssuingCA
from tether.secure_element import Pkcs11SecureElement, build_csr
from tether.secure_element.errors import WrongPinError


def _pem(path: Path, *items: x509.Certificate | x509.CertificateRevocationList) -> Path:
    path.write_bytes(b"".join(item.public_bytes(Encoding.PEM) for item in items))
    return path


def test_token_root_and_factory_ca_issue_a_chain_openssl_accepts(
    token: Token, tmp_path: Path
) -> None:
    with Pkcs11SecureElement.open(token.module, token.label, token.pin) as element:
        element.generate_key("root-ca")
        element.generate_key("factory-ca")
        element.generate_key("UNIT-0001")
        root = RootCA.self_sign(element.signer("root-ca"), common_name="Token Root")
        factory_cert = root.issue_intermediate(
            element.public_key("factory-ca"), common_name="Token Factory CA", role=Role.FACTORY
        )
        factory = IssuingCA(factory_cert, element.signer("factory-ca"))
        device = factory.issue_device_certificate(
            build_csr(element.signer("UNIT-0001"), "UNIT-0001"), "UNIT-0001"
        )
        crl = factory.build_crl(
            [
                RevokedEntry(
                    serial_number=device.serial_number,
                    revoked_at=device.not_valid_before_utc,
                    reason=None,
                )
            ]
        )

    assert verify_chain(device, intermediates=[factory_cert], roots=[root.certificate])
    assert crl.is_signature_valid(factory.signer.public_key())
    root_pem = _pem(tmp_path / "root.pem", root.certificate)
    inter_pem = _pem(tmp_path / "factory.pem", factory_cert)
    leaf_pem = _pem(tmp_path / "device.pem", device)
    verified = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-purpose", "sslclient",
         "-CAfile", str(root_pem), "-untrusted", str(inter_pem), str(leaf_pem)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    # The token-signed CRL revokes the device for OpenSSL too.
    crl_pem = _pem(tmp_path / "crl.pem", crl)
    checked = subprocess.run(
        ["openssl", "verify", "-crl_check", "-CAfile", str(root_pem),
         "-untrusted", str(inter_pem), "-CRLfile", str(crl_pem), str(leaf_pem)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert checked.returncode != 0
    assert "revoked" in (checked.stdout + checked.stderr)


def test_a_locked_ca_key_is_a_clear_error(token: Token) -> None:
    """The CA key cannot be used without the token's PIN: a wrong one is refused by name."""
    with Pkcs11SecureElement.open(token.module, token.label, token.pin) as element:
        element.generate_key("factory-ca")
    with pytest.raises(WrongPinError) as refused:
        Pkcs11SecureElement.open(token.module, token.label, "not-the-pin")
    assert refused.value.code == "se_wrong_pin"
