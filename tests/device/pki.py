"""A small test PKI built with ``cryptography``: root -> device CA -> device leaf, a server CA
with a server certificate for 127.0.0.1, and a rogue CA no device should trust.

Everything is generated per test session in a temporary directory; nothing is checked in.
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

ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    """A certificate with its key (``None`` when the key lives in a token)."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey | None

    def write(self, directory: Path, stem: str) -> tuple[Path, Path | None]:
        cert_path = directory / f"{stem}.crt"
        cert_path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        if self.key is None:
            return cert_path, None
        key_path = directory / f"{stem}.key"
        key_path.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_path.chmod(0o600)
        return cert_path, key_path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey):
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - ONE_DAY)
        .not_valid_after(now + 30 * ONE_DAY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def make_ca(cn: str, parent: Issued | None = None) -> Issued:
    """A CA certificate: self-signed when ``parent`` is None, else signed by ``parent``."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = parent.certificate.subject if parent else _name(cn)
    signer = parent.key if parent else key
    assert signer is not None
    builder = (
        _builder(cn, issuer, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
    )
    if parent is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def issue_device(
    ca: Issued, serial: str, public_key: ec.EllipticCurvePublicKey | None = None
) -> Issued:
    """A device leaf (CN = serial, clientAuth); a fresh key unless ``public_key`` is given."""
    key = None if public_key is not None else ec.generate_private_key(ec.SECP256R1())
    pub = public_key if public_key is not None else key.public_key()  # type: ignore[union-attr]
    assert ca.key is not None
    cert = (
        _builder(serial, ca.certificate.subject, pub)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue_server(ca: Issued, cn: str = "cloud.test", ip: str = "127.0.0.1") -> Issued:
    """A server leaf with SANs ``cn`` (DNS) and ``ip``, serverAuth."""
    key = ec.generate_private_key(ec.SECP256R1())
    assert ca.key is not None
    cert = (
        _builder(cn, ca.certificate.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(cn), x509.IPAddress(ipaddress.ip_address(ip))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)
