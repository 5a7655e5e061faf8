"""Issuance: the root, issuing CAs by role, device/server/service profiles, refusals, CRLs."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from tests.pki.util import (
    cn,
    csr_for,
    device_csr,
    pkilint_cert,
    pkilint_crl,
    tamper_signature,
    write_pem,
)
from tests.support.pki import p384_key, rsa_key
from tether.errors import AuthenticationError, PolicyViolationError
from tether.pki import IssuingCA, RevokedEntry, Role, RootCA, load_csr, verify_chain
from tether.pki.errors import (
    BadCsrSignatureError,
    ChainVerificationError,
    InvalidNameError,
    InvalidSerialError,
    KeyMismatchError,
    RoleMismatchError,
    SubjectNotAllowedError,
    UnsupportedKeyError,
    ValidityError,
)
from tether.pki.keys import generate_key
from tether.pki.verify import verify_server_chain


def _ext(cert: x509.Certificate, kind: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(kind)


def test_root_profile(root: RootCA) -> None:
    cert = root.certificate
    assert cert.issuer == cert.subject
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length is None
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    assert _ext(cert, x509.SubjectKeyIdentifier).value.digest == (
        x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest  # type: ignore[arg-type]
    )
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > timedelta(days=19 * 365)
    assert cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def test_issuing_ca_profile(root: RootCA, factory_ca: IssuingCA) -> None:
    cert = factory_ca.certificate
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(root.certificate, x509.SubjectKeyIdentifier).value.digest
    assert cert.not_valid_after_utc <= root.certificate.not_valid_after_utc
    assert cert.not_valid_before_utc >= root.certificate.not_valid_before_utc
    assert factory_ca.role is Role.FACTORY
    cert.verify_directly_issued_by(root.certificate)


def test_device_certificate_profile(root: RootCA, device_ca: IssuingCA) -> None:
    csr = device_csr("dev-001")
    cert = device_ca.issue_device_certificate(csr, "dev-001", validity=timedelta(days=30))
    assert cert.subject == cn("dev-001")
    assert cert.public_key() == csr.public_key()
    bc = _ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = _ext(cert, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        _ext(cert, x509.SubjectAlternativeName)
    aki = _ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == _ext(device_ca.certificate, x509.SubjectKeyIdentifier).value.digest
    assert 0 < cert.serial_number < 2**159
    assert cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    lifetime = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=29) < lifetime <= timedelta(days=30)
    chain = verify_chain(cert, intermediates=[device_ca.certificate], roots=[root.certificate])
    assert chain == [cert, device_ca.certificate, root.certificate]


def test_device_validity_defaults_to_the_issuers(device_ca: IssuingCA) -> None:
    cert = device_ca.issue_device_certificate(device_csr("dev-002"), "dev-002")
    assert cert.not_valid_after_utc == device_ca.certificate.not_valid_after_utc


def test_serial_numbers_are_random(device_ca: IssuingCA) -> None:
    key = generate_key().public_key()
    serials = {device_ca.issue_device_certificate_for_key(key, "d").serial_number for _ in range(5)}
    assert len(serials) == 5


def test_the_subject_comes_from_the_serial_not_the_csr(device_ca: IssuingCA) -> None:
    cert = device_ca.issue_device_certificate(csr_for(generate_key()), "dev-empty-subject")
    assert cert.subject == cn("dev-empty-subject")


def test_factory_ca_issues_device_certificates(factory_ca: IssuingCA) -> None:
    cert = factory_ca.issue_device_certificate(device_csr("f-1"), "f-1")
    assert cert.issuer == factory_ca.certificate.subject


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_factory", "what"),
    [(rsa_key, "RSA"), (p384_key, "secp384r1"), (ed25519.Ed25519PrivateKey.generate, "Ed25519")],
)
def test_csrs_with_other_keys_are_refused(device_ca: IssuingCA, key_factory, what: str) -> None:
    csr = load_csr(csr_for(key_factory()).public_bytes(Encoding.PEM))
    with pytest.raises(UnsupportedKeyError, match=what) as info:
        device_ca.issue_device_certificate(csr, "dev-001")
    assert "P-256" in info.value.message


def test_csr_with_a_bad_signature_is_refused(device_ca: IssuingCA) -> None:
    csr = load_csr(tamper_signature(device_csr("dev-001")))
    with pytest.raises(BadCsrSignatureError, match="possession"):
        device_ca.issue_device_certificate(csr, "dev-001")


_CN = x509.NameAttribute(NameOID.COMMON_NAME, "dev-001")


@pytest.mark.parametrize(
    "attributes",
    [
        [x509.NameAttribute(NameOID.EMAIL_ADDRESS, "alice@example.com")],
        [_CN, x509.NameAttribute(NameOID.GIVEN_NAME, "Alice")],
        [_CN, x509.NameAttribute(x509.ObjectIdentifier("1.2.3.4"), "x")],
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ACME")],
    ],
)
def test_csr_subjects_with_anything_but_the_cn_are_refused(
    device_ca: IssuingCA, attributes: list[x509.NameAttribute]
) -> None:
    csr = csr_for(generate_key(), x509.Name(attributes))
    with pytest.raises(SubjectNotAllowedError, match="only CN") as info:
        device_ca.issue_device_certificate(csr, "dev-001")
    assert isinstance(info.value, PolicyViolationError)


def test_csr_cn_must_match_the_serial(device_ca: IssuingCA) -> None:
    with pytest.raises(SubjectNotAllowedError, match="does not match"):
        device_ca.issue_device_certificate(device_csr("dev-999"), "dev-001")


def test_multi_valued_rdn_is_refused(device_ca: IssuingCA) -> None:
    rdn = x509.RelativeDistinguishedName(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "dev-001"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "42"),
        ]
    )
    with pytest.raises(SubjectNotAllowedError):
        device_ca.issue_device_certificate(csr_for(generate_key(), x509.Name([rdn])), "dev-001")


def test_invalid_serial_is_refused(device_ca: IssuingCA) -> None:
    with pytest.raises(InvalidSerialError):
        device_ca.issue_device_certificate(device_csr("dev-001"), "alice@example.com")


def test_validity_past_the_issuer_is_refused_not_clipped(device_ca: IssuingCA) -> None:
    remaining = device_ca.certificate.not_valid_after_utc - datetime.now(UTC)
    with pytest.raises(ValidityError, match="after the issuer's notAfter"):
        device_ca.issue_device_certificate(
            device_csr("dev-001"), "dev-001", validity=remaining + timedelta(days=1)
        )
    with pytest.raises(ValidityError):
        device_ca.issue_device_certificate(device_csr(), "dev-001", validity=timedelta(0))


def test_intermediate_validity_past_the_root_is_refused(root: RootCA) -> None:
    with pytest.raises(ValidityError):
        root.issue_intermediate(
            generate_key().public_key(),
            common_name="Too long",
            role=Role.DEVICE,
            validity=timedelta(days=21 * 365),
        )


def test_intermediate_needs_a_p256_key_and_a_known_role(root: RootCA) -> None:
    with pytest.raises(UnsupportedKeyError):
        root.issue_intermediate(p384_key().public_key(), common_name="X", role=Role.DEVICE)
    with pytest.raises(InvalidNameError):
        root.issue_intermediate(generate_key().public_key(), common_name="X", role="admin")  # type: ignore[arg-type]
    with pytest.raises(InvalidNameError):
        root.issue_intermediate(generate_key().public_key(), common_name="", role=Role.DEVICE)


@pytest.mark.parametrize(
    ("ca_name", "action"),
    [
        ("server_ca", "device"),
        ("service_ca", "device"),
        ("device_ca", "server"),
        ("factory_ca", "service"),
        ("server_ca", "service"),
    ],
)
def test_roles_are_enforced(request: pytest.FixtureRequest, ca_name: str, action: str) -> None:
    ca: IssuingCA = request.getfixturevalue(ca_name)
    key = generate_key().public_key()
    with pytest.raises(RoleMismatchError):
        if action == "device":
            ca.issue_device_certificate(device_csr("d"), "d")
        elif action == "server":
            ca.issue_server_certificate(key, dns_names=["gw.example.com"])
        else:
            ca.issue_service_certificate(key, name="billing")


def test_issuing_ca_refuses_a_foreign_key(device_ca: IssuingCA) -> None:
    from tether.pki.signer import SoftwareSigner

    with pytest.raises(KeyMismatchError):
        IssuingCA(device_ca.certificate, SoftwareSigner(generate_key()))


# --- server and service profiles ----------------------------------------------------------


def test_server_certificate_profile(root: RootCA, server_ca: IssuingCA) -> None:
    cert = server_ca.issue_server_certificate(
        generate_key().public_key(),
        dns_names=["gateway.tether.test"],
        ip_addresses=[ipaddress.ip_address("127.0.0.1")],
    )
    san = _ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gateway.tether.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    for name in ("gateway.tether.test", ipaddress.ip_address("127.0.0.1")):
        chain = verify_server_chain(
            cert, name=name, intermediates=[server_ca.certificate], roots=[root.certificate]
        )
        assert chain[0] == cert
    with pytest.raises(ChainVerificationError):
        verify_server_chain(
            cert, name="other.test", intermediates=[server_ca.certificate], roots=[root.certificate]
        )


def test_server_certificate_needs_a_name(server_ca: IssuingCA) -> None:
    with pytest.raises(InvalidNameError):
        server_ca.issue_server_certificate(generate_key().public_key())
    with pytest.raises(InvalidNameError):
        server_ca.issue_server_certificate(generate_key().public_key(), dns_names=["*.x.com"])


def test_service_certificate_profile(root: RootCA, service_ca: IssuingCA) -> None:
    cert = service_ca.issue_service_certificate(generate_key().public_key(), name="billing-api")
    assert cert.subject == cn("billing-api")
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    verify_chain(cert, intermediates=[service_ca.certificate], roots=[root.certificate])
    with pytest.raises(InvalidNameError):
        service_ca.issue_service_certificate(generate_key().public_key(), name="Bob Smith")


# --- path validation ----------------------------------------------------------------------


def test_verify_chain_refuses_another_root(device_ca: IssuingCA) -> None:
    cert = device_ca.issue_device_certificate(device_csr(), "dev-001")
    other = RootCA.generate(common_name="Other Root")
    with pytest.raises(ChainVerificationError) as info:
        verify_chain(cert, intermediates=[device_ca.certificate], roots=[other.certificate])
    assert isinstance(info.value, AuthenticationError)


def test_verify_chain_refuses_a_server_certificate_as_client(
    root: RootCA, server_ca: IssuingCA
) -> None:
    cert = server_ca.issue_server_certificate(
        generate_key().public_key(), dns_names=["gw.example.com"]
    )
    with pytest.raises(ChainVerificationError):
        verify_chain(cert, intermediates=[server_ca.certificate], roots=[root.certificate])


def test_verify_chain_checks_time(root: RootCA, device_ca: IssuingCA) -> None:
    cert = device_ca.issue_device_certificate(device_csr(), "dev-001", validity=timedelta(days=1))
    with pytest.raises(ChainVerificationError):
        verify_chain(
            cert,
            intermediates=[device_ca.certificate],
            roots=[root.certificate],
            at=datetime.now(UTC) + timedelta(days=2),
        )


# --- CRLs ---------------------------------------------------------------------------------


def test_issuing_ca_crl(device_ca: IssuingCA, tmp_path: Path) -> None:
    cert = device_ca.issue_device_certificate(device_csr(), "dev-001")
    entry = RevokedEntry(cert.serial_number, datetime.now(UTC), x509.ReasonFlags.key_compromise)
    plain = RevokedEntry(12345, datetime.now(UTC), x509.ReasonFlags.unspecified)
    crl = device_ca.build_crl([entry, plain])
    assert crl.is_signature_valid(device_ca.certificate.public_key())  # type: ignore[arg-type]
    assert crl.issuer == device_ca.certificate.subject
    revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert revoked is not None
    reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    unspecified = crl.get_revoked_certificate_by_serial_number(12345)
    assert unspecified is not None and len(unspecified.extensions) == 0
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > 0
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == timedelta(days=7)
    path = tmp_path / "crl.pem"
    path.write_bytes(crl.public_bytes(Encoding.PEM))
    result = pkilint_crl(path, "CRL")
    assert result.returncode == 0, result.stdout + result.stderr


def test_root_crl_lists_revoked_issuing_cas(root: RootCA, device_ca: IssuingCA) -> None:
    entry = RevokedEntry(device_ca.certificate.serial_number, datetime.now(UTC), None)
    crl = root.build_crl([entry], crl_number=7)
    assert crl.is_signature_valid(root.certificate.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(device_ca.certificate.serial_number)
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7


# --- RFC 5280 lint of every profile -------------------------------------------------------


def test_every_profile_passes_pkilint(
    tmp_path: Path,
    root: RootCA,
    device_ca: IssuingCA,
    server_ca: IssuingCA,
    service_ca: IssuingCA,
) -> None:
    key = generate_key().public_key()
    certs = {
        "root": root.certificate,
        "device_ca": device_ca.certificate,
        "server_ca": server_ca.certificate,
        "device": device_ca.issue_device_certificate(device_csr("dev-1"), "dev-1"),
        "server": server_ca.issue_server_certificate(
            key, dns_names=["gateway.tether.test"], ip_addresses=[ipaddress.ip_address("::1")]
        ),
        "service": service_ca.issue_service_certificate(key, name="billing"),
    }
    for name, cert in certs.items():
        result = pkilint_cert(write_pem(tmp_path / f"{name}.pem", cert))
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
