"""Signing with a Signer that is not a SoftwareSigner: TBS, external signature, asn1crypto DER."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tests.pki.util import TokenLikeSigner, WrongKeySigner, device_csr, pkilint_cert, write_pem
from tether.pki import (
    IssuingCA,
    RevokedEntry,
    Role,
    RootCA,
    Signer,
    lint,
    sign_certificate,
    sign_crl,
    verify_chain,
)
from tether.pki.errors import SigningError
from tether.pki.keys import generate_key


def test_token_like_signer_is_a_signer_but_not_a_software_signer() -> None:
    from tether.pki.signer import SoftwareSigner

    signer = TokenLikeSigner()
    assert isinstance(signer, Signer)
    assert not isinstance(signer, SoftwareSigner)


def test_a_whole_hierarchy_signed_without_the_fast_path(tmp_path: Path) -> None:
    root_signer = TokenLikeSigner()
    root = RootCA.self_sign(root_signer, common_name="Token Root")
    assert root_signer.calls == 1
    inter_key = generate_key()
    inter_signer = TokenLikeSigner(inter_key)
    inter_cert = root.issue_intermediate(
        inter_key.public_key(), common_name="Token Device CA", role=Role.DEVICE
    )
    assert root_signer.calls == 2
    ca = IssuingCA(inter_cert, inter_signer)
    leaf = ca.issue_device_certificate(device_csr("dev-7"), "dev-7")
    assert inter_signer.calls == 1
    # The AKI names the real issuer key, not the throwaway key the TBS was drafted with.
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert (
        aki.key_identifier
        == x509.SubjectKeyIdentifier.from_public_key(inter_key.public_key()).digest
    )
    assert verify_chain(leaf, intermediates=[inter_cert], roots=[root.certificate])[0] == leaf
    assert lint(leaf, [inter_cert, root.certificate]) == []
    for name, cert in {"root": root.certificate, "inter": inter_cert, "leaf": leaf}.items():
        result = pkilint_cert(write_pem(tmp_path / f"{name}.pem", cert))
        assert result.returncode == 0, result.stdout


def test_crl_signed_without_the_fast_path() -> None:
    signer = TokenLikeSigner()
    root = RootCA.self_sign(signer)
    crl = root.build_crl([RevokedEntry(99, datetime.now(UTC), x509.ReasonFlags.ca_compromise)])
    assert crl.is_signature_valid(signer.public_key())
    assert crl.get_revoked_certificate_by_serial_number(99) is not None


def _builder(public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )


def test_a_signature_that_does_not_verify_is_refused() -> None:
    signer = WrongKeySigner()
    with pytest.raises(SigningError, match="does not verify"):
        sign_certificate(_builder(signer.public_key()), signer)
    now = datetime.now(UTC)
    crl_builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(x509.Name([]))
        .last_update(now)
        .next_update(now + timedelta(days=1))
    )
    with pytest.raises(SigningError):
        sign_crl(crl_builder, signer)


def test_fast_path_and_token_path_give_equivalent_certificates() -> None:
    from tether.pki.signer import SoftwareSigner

    key = generate_key()
    fast = sign_certificate(_builder(key.public_key()), SoftwareSigner(key))
    slow = sign_certificate(_builder(key.public_key()), TokenLikeSigner(key))
    assert fast.tbs_certificate_bytes == slow.tbs_certificate_bytes
    key.public_key().verify(slow.signature, slow.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
