"""A throw-away test PKI built with ``cryptography`` (tether.pki is written in parallel).

root -> device issuing CA -> device leaves (CN = serial, clientAuth)
     -> service issuing CA -> service leaves (CN = service name, clientAuth)
     -> server issuing CA -> the gateway's certificate (127.0.0.1, localhost, serverAuth)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Issued:
    """A certificate, its key, and both written as PEM files."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(directory: Path, stem: str, certs: list[x509.Certificate], key) -> tuple[Path, Path]:
    cert_path = directory / f"{stem}.pem"
    key_path = directory / f"{stem}.key"
    cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def make_ca(
    directory: Path, common_name: str, issuer: Issued | None = None, *, stem: str | None = None
) -> Issued:
    """A CA certificate: self-signed root when ``issuer`` is None, else an issuing CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    signer_key = issuer.key if issuer else key
    issuer_name = issuer.certificate.subject if issuer else _name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None if not issuer else 0), True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
    certificate = builder.sign(signer_key, hashes.SHA256())
    cert_path, key_path = _write(
        directory, stem or common_name.replace(" ", "_"), [certificate], key
    )
    return Issued(certificate, key, cert_path, key_path)


def issue_leaf(
    directory: Path,
    ca: Issued,
    common_name: str,
    *,
    server: bool = False,
    stem: str | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    issuer_name: x509.Name | None = None,
    not_after: dt.datetime | None = None,
    client_auth: bool = True,
    authority_key: ec.EllipticCurvePublicKey | None = None,
) -> Issued:
    """A leaf signed by ``ca`` (``issuer_name`` overrides the issuer to forge a certificate)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    if client_auth and not server:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if not usages:
        usages.append(ExtendedKeyUsageOID.CODE_SIGNING)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer_name or ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
        )
        .add_extension(x509.ExtendedKeyUsage(usages), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                authority_key or ca.key.public_key()
            ),
            False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        )
    certificate = builder.sign(ca.key, hashes.SHA256())
    chain = [certificate, ca.certificate] if server else [certificate]
    cert_path, key_path = _write(directory, stem or common_name, chain, key)
    return Issued(certificate, key, cert_path, key_path)


def self_signed_leaf(directory: Path, common_name: str, *, stem: str) -> Issued:
    """A self-signed clientAuth certificate carrying ``common_name`` (an impostor)."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = _write(directory, stem, [certificate], key)
    return Issued(certificate, key, cert_path, key_path)


@dataclass(frozen=True)
class GatewayPKI:
    """Everything a gateway test needs; ``root`` is what clients trust for the server."""

    directory: Path
    root: Issued
    device_ca: Issued
    service_ca: Issued
    server_ca: Issued
    server: Issued
    device: Issued  # CN = DEVICE_SERIAL
    other_device: Issued  # CN = OTHER_SERIAL
    service: Issued  # CN = SERVICE_NAME


DEVICE_SERIAL = "SN0001"
OTHER_SERIAL = "SN0002"
SERVICE_NAME = "telemetry-ingest"


def build_test_pki(directory: Path) -> GatewayPKI:
    """Generate the whole test PKI under ``directory``."""
    root = make_ca(directory, "Tether Test Root", stem="root")
    device_ca = make_ca(directory, "Tether Test Device CA", root, stem="device_ca")
    service_ca = make_ca(directory, "Tether Test Service CA", root, stem="service_ca")
    server_ca = make_ca(directory, "Tether Test Server CA", root, stem="server_ca")
    return GatewayPKI(
        directory=directory,
        root=root,
        device_ca=device_ca,
        service_ca=service_ca,
        server_ca=server_ca,
        server=issue_leaf(directory, server_ca, "gateway.test", server=True, stem="server"),
        device=issue_leaf(directory, device_ca, DEVICE_SERIAL),
        other_device=issue_leaf(directory, device_ca, OTHER_SERIAL),
        service=issue_leaf(directory, service_ca, SERVICE_NAME),
    )
