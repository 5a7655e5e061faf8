"""Hostile certificates for the attack matrix, each signed by a real ``tether.pki`` CA.

``tether.pki`` refuses to issue anything outside the Tether profile, which is the point; an
attacker is not so polite. These builders sign with the CA's own ``Signer`` through
``tether.pki.sign_certificate`` so every certificate here is genuinely issued by a registered CA
and only the attribute under test is wrong.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.cloud.conftest import write_identity
from tests.cloud.gateway.pki import Issued
from tether.pki import IssuingCA, sign_certificate

NOW = dt.datetime.now(dt.UTC)


def hostile_leaf(
    ca: IssuingCA,
    serial: str,
    directory: Path,
    *,
    stem: str,
    key: Any = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    usages: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    is_ca: bool = False,
    claimed_issuer: x509.Certificate | None = None,
    key_usage: x509.KeyUsage | bool | None = True,
    basic_constraints: bool = True,
    extra_subject: tuple[x509.NameAttribute, ...] = (),
    san: x509.SubjectAlternativeName | None = None,
) -> Issued:
    """A client certificate from ``ca`` for ``serial`` with one attribute bent.

    ``key`` may be any private key (RSA, P-384...); the default is a fresh P-256 key.
    ``claimed_issuer`` forges the issuer name and key identifier: the certificate names that
    CA but is signed by ``ca``. ``key_usage`` False leaves keyUsage out (a KeyUsage replaces
    the profile's), ``basic_constraints`` False leaves basicConstraints out,
    ``extra_subject`` adds attributes beside the CN and ``san`` adds a subjectAltName.
    """
    named = claimed_issuer or ca.certificate
    key = key or ec.generate_private_key(ec.SECP256R1())
    profile_usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=is_ca,
        crl_sign=is_ca,
        encipher_only=False,
        decipher_only=False,
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial), *extra_subject])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(named.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(hours=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                named.public_key()  # type: ignore[arg-type]
            ),
            critical=False,
        )
    )
    if basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=None), critical=True
        )
    if key_usage is not False and key_usage is not None:
        usage = profile_usage if key_usage is True else key_usage
        builder = builder.add_extension(usage, critical=True)
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    certificate = sign_certificate(builder, ca.signer)
    return write_identity(directory, stem, certificate, key)


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def server_identity(
    ca: IssuingCA,
    directory: Path,
    *,
    stem: str,
    dns_name: str = "localhost",
    ip: str = "127.0.0.1",
    not_after: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """A gateway certificate chain file (leaf + issuing CA) and key file, signed by ``ca``.

    ``not_after`` in the past gives an expired server certificate, which ``tether.pki`` would
    never issue.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=10))
        .not_valid_after(not_after or NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(dns_name), x509.IPAddress(ipaddress.ip_address(ip))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca.certificate.public_key()  # type: ignore[arg-type]
            ),
            critical=False,
        )
    )
    certificate = sign_certificate(builder, ca.signer)
    issued = write_identity(directory, stem, certificate, key)
    chain = directory / f"{stem}.chain.pem"
    chain.write_bytes(issued.cert_path.read_bytes() + _pem(ca.certificate))
    return chain, issued.key_path


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.PEM)
