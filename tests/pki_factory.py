"""Test certificates in one place: valid ones from ``tether.pki``, wrong ones built raw.

A test that needs a *valid* Tether certificate (root, issuing CA by role, device, server or
service leaf) gets it from ``tether.pki``, so it exercises the real profiles. What
``tether.pki`` refuses to make on purpose is built here with raw ``cryptography``: expired
leaves, a missing clientAuth, P-384 keys, forged issuers, self-signed impostors, chosen
certificate serial numbers, and CAs whose subject is a bare CN (some assertions pin such a
subject; a Tether issuing CA also carries ``OU=tether:<role>``). Keys are made per run.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tether.pki import IssuingCA, Role, RootCA, SoftwareSigner, generate_key

NOW = dt.datetime.now(dt.UTC)

PrivateKey = ec.EllipticCurvePrivateKey


# -- valid Tether certificates (tether.pki) ----------------------------------------------


def tether_root(common_name: str) -> tuple[RootCA, PrivateKey]:
    """A Tether root and its key (the key is kept so raw test CAs can hang under it)."""
    key = generate_key()
    return RootCA.self_sign(SoftwareSigner(key), common_name=common_name), key


def tether_issuing_ca(root: RootCA, common_name: str, role: Role) -> tuple[IssuingCA, PrivateKey]:
    """A Tether issuing CA of ``role`` under ``root``, and its key (for PEM files)."""
    key = generate_key()
    certificate = root.issue_intermediate(key.public_key(), common_name=common_name, role=role)
    return IssuingCA(certificate, SoftwareSigner(key)), key


def server_certificate(
    ca: IssuingCA, dns_name: str, ip: str, key: PrivateKey | None = None
) -> tuple[x509.Certificate, PrivateKey]:
    """A Tether server certificate for ``dns_name`` and ``ip`` (serverAuth), and its key."""
    key = key or generate_key()
    certificate = ca.issue_server_certificate(
        key.public_key(), dns_names=[dns_name], ip_addresses=[ipaddress.ip_address(ip)]
    )
    return certificate, key


# -- files -------------------------------------------------------------------------------


def write_certificates(path: Path, certificates: Sequence[x509.Certificate]) -> Path:
    """Write ``certificates`` as concatenated PEM (leaf first for a chain)."""
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))
    return path


def write_key(path: Path, key: PrivateKey) -> Path:
    """Write ``key`` as unencrypted PKCS#8 PEM, readable by the owner only."""
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


# -- deliberately non-Tether certificates (raw cryptography) -----------------------------


def cn_name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def raw_ca(
    common_name: str,
    *,
    issuer: x509.Certificate | None = None,
    issuer_key: PrivateKey | None = None,
    key: PrivateKey | None = None,
    path_length: int | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """A CA whose subject is CN=``common_name`` only: self-signed unless ``issuer`` is given.

    For look-alike and foreign CAs, and where a test pins a bare-CN issuer name.
    """
    key = key or generate_key()
    signer = issuer_key if issuer is not None else key
    assert signer is not None, "a CA signed by an issuer needs the issuer's key"
    builder = (
        x509.CertificateBuilder()
        .subject_name(cn_name(common_name))
        .issuer_name(issuer.subject if issuer is not None else cn_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256()), key


def raw_leaf(
    issuer_name: x509.Name,
    issuer_key: PrivateKey,
    common_name: str,
    public_key: ec.EllipticCurvePublicKey,
    *,
    usages: Sequence[x509.ObjectIdentifier] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
    not_after: dt.datetime | None = None,
    serial_number: int | None = None,
    san: x509.SubjectAlternativeName | None = None,
    authority_key: ec.EllipticCurvePublicKey | None = None,
    subject_key_id: bool = True,
) -> x509.Certificate:
    """An end-entity certificate CN=``common_name`` signed by ``issuer_key``, no checks at all.

    Any name (also ones ``validate_serial`` refuses), any key (P-384, ...), any EKU, any
    validity and serial number; ``authority_key`` overrides the AKI to forge an issuer. It
    carries a subjectKeyIdentifier (the profile wants one) unless ``subject_key_id`` is False.
    """
    builder = (
        x509.CertificateBuilder()
        .subject_name(cn_name(common_name))
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(serial_number if serial_number is not None else x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(
                authority_key or issuer_key.public_key()
            ),
            critical=False,
        )
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    if subject_key_id:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def self_signed_leaf(
    common_name: str, key: PrivateKey | None = None
) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed clientAuth certificate carrying ``common_name``: an impostor."""
    key = key or generate_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(cn_name(common_name))
        .issuer_name(cn_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate, key
