"""The Tether profile linter on Tether chains and on certificates from elsewhere."""

from __future__ import annotations

import subprocess
import warnings
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.pki.util import device_csr
from tests.support.pki import p384_key
from tether.errors import InvalidInputError
from tether.pki import Finding, IssuingCA, RootCA, lint, load_certificate
from tether.pki.keys import generate_key
from tether.pki.lint import client_violations
from tether.pki.names import ROLE_PURPOSE
from tether.pki.signing import sign_certificate


def codes(findings: list[Finding], severity: str = "error") -> set[str]:
    return {f.code for f in findings if f.severity == severity}


def test_a_tether_chain_is_clean(root: RootCA, device_ca: IssuingCA) -> None:
    cert = device_ca.issue_device_certificate(device_csr("dev-1"), "dev-1")
    assert lint(cert, [device_ca.certificate, root.certificate]) == []
    assert lint(cert, [root.certificate, device_ca.certificate]) == []  # order does not matter


def test_findings_are_frozen_values(root: RootCA) -> None:
    finding = Finding("info", "x", "y", "z")
    with pytest.raises(FrozenInstanceError):
        finding.code = "changed"  # type: ignore[misc]
    assert finding.as_dict() == {"severity": "info", "code": "x", "message": "y", "subject": "z"}


def test_without_the_issuer_the_signature_is_not_claimed(device_ca: IssuingCA) -> None:
    cert = device_ca.issue_device_certificate(device_csr("dev-1"), "dev-1")
    findings = lint(cert)
    assert codes(findings) == set()
    assert codes(findings, "info") == {"chain.issuer_unknown"}


def test_a_missing_intermediate_is_an_error(root: RootCA, device_ca: IssuingCA) -> None:
    cert = device_ca.issue_device_certificate(device_csr("dev-1"), "dev-1")
    assert "chain.issuer_missing" in codes(lint(cert, [root.certificate]))


def test_a_wrong_signature_is_found(root: RootCA, device_ca: IssuingCA) -> None:
    cert = device_ca.issue_device_certificate(device_csr("dev-1"), "dev-1")
    impostor = root.create_issuing_ca(common_name="Test Device CA", role="device")  # same name
    assert impostor.certificate.subject == device_ca.certificate.subject
    assert "signature.invalid" in codes(lint(cert, [impostor.certificate]))


def test_role_mismatch_is_found(root: RootCA, server_ca: IssuingCA, device_ca: IssuingCA) -> None:
    # A server issuing CA has no business signing device certs: build one by hand.
    cert = _hand_made_leaf(server_ca)
    assert codes(lint(cert, [server_ca.certificate, root.certificate])) == {
        "chain.role",
        "chain.eku",
    }


def _openssl(tmp_path: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True, timeout=60)


def test_an_rsa_certificate_from_elsewhere_gives_findings(tmp_path: Path) -> None:
    _openssl(
        tmp_path,
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem", "-out", "c.pem",
        "-subj", "/CN=legacy.example.com/O=Elsewhere", "-days", "2", "-sha256",
    )  # fmt: skip
    cert = load_certificate((tmp_path / "c.pem").read_bytes())
    found = codes(lint(cert))
    assert {"key.type", "signature.algorithm"} <= found


def test_a_bare_ec_certificate_gives_findings(tmp_path: Path) -> None:
    key = p384_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "alice"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "alice@example.com"),
        ]
    )
    now = datetime.now(UTC)
    issuer_key = generate_key()
    issuer_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Somebody CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(issuer_key, hashes.SHA384())
    )
    found = codes(lint(cert))
    assert {
        "signature.algorithm",
        "key.curve",
        "basic_constraints.missing",
        "key_usage.missing",
        "eku.missing",
        "ski.missing",
        "aki.missing",
        "subject.not_cn_only",
    } <= found


def _with_serial(cert: x509.Certificate, serial: int) -> x509.Certificate:
    """``cert`` with another serial number (cryptography's builder refuses bad ones)."""
    original = asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))
    tbs = original["tbs_certificate"]
    tbs["serial_number"] = serial
    return x509.load_der_x509_certificate(
        asn1_x509.Certificate(
            {
                "tbs_certificate": tbs,
                "signature_algorithm": original["signature_algorithm"],
                "signature_value": original["signature_value"],
            }
        ).dump()
    )


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@pytest.mark.parametrize(
    ("serial", "code"),
    [(2**159, "serial.too_long"), (0, "serial.not_positive"), (-5, "serial.not_positive")],
)
def test_bad_serial_numbers_are_found(root: RootCA, serial: int, code: str) -> None:
    cert = _with_serial(root.certificate, serial)
    found = codes(lint(cert))
    assert code in found
    assert "signature.invalid" in found  # the body changed under the signature


def test_ca_profile_errors_are_found() -> None:
    key = generate_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Loose Root")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(5)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=False)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, False, False, False),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    found = codes(lint(cert))
    assert {
        "basic_constraints.not_critical",
        "key_usage.not_critical",
        "key_usage.ca_bits",
        "ski.missing",
    } <= found
    assert "aki.missing" in codes(lint(cert), "warning")


def test_a_validity_outside_the_issuer_is_found(root: RootCA) -> None:
    key = generate_key()
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "late")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(9)
        .not_valid_before(now)
        .not_valid_after(root.certificate.not_valid_after_utc + timedelta(days=1))
    )
    from tether.pki.signing import sign_certificate

    cert = sign_certificate(builder, root.signer)
    assert "validity.outside_issuer" in codes(lint(cert, [root.certificate]))


def test_the_key_type_of_the_leaf_is_checked_in_a_chain(root: RootCA) -> None:
    assert isinstance(root.certificate.public_key(), ec.EllipticCurvePublicKey)
    assert lint(root.certificate) == []


_ROOT_DER = RootCA.generate(common_name="Fuzz Root").certificate.public_bytes(Encoding.DER)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(_ROOT_DER) - 1), st.integers(1, 255)), min_size=1, max_size=3
    )
)
def test_mutated_certificates_never_crash_the_linter(flips: list[tuple[int, int]]) -> None:
    data = bytearray(_ROOT_DER)
    for index, mask in flips:
        data[index] ^= mask
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-positive serials warn while they still load
        try:
            cert = load_certificate(bytes(data))
        except InvalidInputError:
            return
        findings = lint(cert)
    assert all(isinstance(f, Finding) for f in findings)
    if bytes(data) != _ROOT_DER:
        assert findings, "a changed certificate must at least fail its self-signature"


def _issuing_ca_with(
    root: RootCA, role: str, usages: list[x509.ObjectIdentifier] | None
) -> x509.Certificate:
    """An issuing CA of ``role`` whose EKU is ``usages`` (None: no EKU, as before EKUs)."""
    key = generate_key()
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"tether:{role}"),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"Hand-made {role} CA"),
                ]
            )
        )
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.certificate.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return sign_certificate(builder, root.signer)


def test_issuing_cas_carry_the_purpose_of_their_role(root: RootCA) -> None:
    for role, purpose in ROLE_PURPOSE.items():
        ca = root.create_issuing_ca(common_name=f"{role.value} CA", role=role)
        eku = ca.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [purpose]
        assert lint(ca.certificate, [root.certificate]) == []


def test_an_issuing_ca_without_eku_is_a_warning(root: RootCA) -> None:
    legacy = _issuing_ca_with(root, "factory", None)
    findings = lint(legacy, [root.certificate])
    assert codes(findings) == set()
    assert "eku.ca_missing" in codes(findings, "warning")


def test_an_issuing_ca_whose_eku_is_not_its_role_is_an_error(root: RootCA) -> None:
    wrong = _issuing_ca_with(root, "factory", [ExtendedKeyUsageOID.SERVER_AUTH])
    assert "eku.ca_role" in codes(lint(wrong, [root.certificate]))
    anything = _issuing_ca_with(root, "device", [ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE])
    assert {"eku.any", "eku.ca_role"} <= codes(lint(anything, [root.certificate]))


def _hand_made_leaf(
    ca: IssuingCA,
    *,
    purpose: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH,
    san: x509.SubjectAlternativeName | None = None,
) -> x509.Certificate:
    """A leaf CN=dev-9 from ``ca``, true to the profile but for ``purpose`` and ``san``."""
    key = generate_key()
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dev-9")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.certificate.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return sign_certificate(builder, ca.signer)


def test_client_violations_are_the_gates_view_of_the_profile(device_ca: IssuingCA) -> None:
    assert client_violations(device_ca.issue_device_certificate(device_csr("dev-1"), "dev-1")) == []
    with_san = _hand_made_leaf(
        device_ca, san=x509.SubjectAlternativeName([x509.RFC822Name("a@example.com")])
    )
    assert {f.code for f in client_violations(with_san)} == {"san.on_client"}
    assert client_violations(_hand_made_leaf(device_ca)) == []
    # A server certificate at the client gate is judged as a client certificate.
    server_leaf = _hand_made_leaf(device_ca, purpose=ExtendedKeyUsageOID.SERVER_AUTH)
    assert "eku.purpose" in {f.code for f in client_violations(server_leaf)}
