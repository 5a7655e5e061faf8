"""Helpers for the PKI tests: CSRs of every shape, pkilint runs, a token-like signer.

Certificates and keys of the wrong kind come from ``tests.support.pki``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from tether.pki.keys import generate_key

BIN = Path(sys.executable).parent


def csr_for(key: object, subject: x509.Name | None = None) -> x509.CertificateSigningRequest:
    """A CSR signed by ``key`` (any type cryptography can sign a CSR with)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject or x509.Name([]))
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)  # type: ignore[arg-type]


def cn(value: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])


def device_csr(serial: str = "dev-001") -> x509.CertificateSigningRequest:
    return csr_for(generate_key(), cn(serial))


def tamper_signature(csr: x509.CertificateSigningRequest) -> bytes:
    """The CSR's DER with one bit of the signature flipped (still parseable)."""
    der = bytearray(csr.public_bytes(Encoding.DER))
    der[-2] ^= 0x01
    return bytes(der)


class TokenLikeSigner:
    """A Signer that is not a SoftwareSigner: only ``public_key`` and ``sign``, like a token."""

    def __init__(self, key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self._key = key or generate_key()
        self.calls = 0

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        self.calls += 1
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))


class WrongKeySigner(TokenLikeSigner):
    """Claims one public key and signs with another: the assembled result must be refused."""

    def __init__(self) -> None:
        super().__init__()
        self._other = generate_key()

    def sign(self, data: bytes) -> bytes:
        return self._other.sign(data, ec.ECDSA(hashes.SHA256()))


def pkilint_cert(path: Path) -> subprocess.CompletedProcess[str]:
    """pkilint's RFC 5280 certificate linter at ERROR threshold (exit 0 = no ERROR/FATAL)."""
    return subprocess.run(
        [str(BIN / "lint_pkix_cert"), "lint", "-s", "ERROR", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def pkilint_crl(path: Path, kind: str) -> subprocess.CompletedProcess[str]:
    """pkilint's RFC 5280 CRL linter (``kind`` CRL or ARL) at ERROR threshold."""
    return subprocess.run(
        [str(BIN / "lint_crl"), "lint", "-t", kind, "-p", "PKIX", "-s", "ERROR", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return path
