"""Reading certificates and CSRs from outside: PEM or DER, size-limited, errors not traces.

Everything that arrives from a file, a request body or a factory station goes through here.
Inputs larger than ``MAX_INPUT_BYTES`` (64 KiB: a Tether certificate is < 1 KiB, a long
chain a few KiB) are refused before parsing. Parse failures become ``MalformedInputError``
(an ``InvalidInputError``), never a ``ValueError`` from deep inside ``cryptography``.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding

from tether.pki.errors import InputTooLargeError, MalformedInputError

MAX_INPUT_BYTES = 64 * 1024
# What cryptography raises for bytes it cannot make sense of (not all are ValueErrors).
PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
)
_PEM_MARKER = b"-----BEGIN "


def _check_size(data: bytes, what: str) -> None:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedInputError(f"the {what} must be bytes (PEM or DER)")
    if len(data) > MAX_INPUT_BYTES:
        raise InputTooLargeError(
            f"the {what} is {len(data)} bytes; the limit is {MAX_INPUT_BYTES} bytes (64 KiB)"
        )
    if len(data) == 0:
        raise MalformedInputError(f"the {what} is empty")


def _is_pem(data: bytes) -> bool:
    return bytes(data).lstrip().startswith(_PEM_MARKER)


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """All certificates in ``data``: one DER certificate, or one or more PEM blocks, in order.

    Size-limited to ``MAX_INPUT_BYTES``; raises ``MalformedInputError`` when nothing parses.
    """
    _check_size(data, "certificate input")
    raw = bytes(data)
    try:
        if _is_pem(raw):
            certs = x509.load_pem_x509_certificates(raw)
        else:
            certs = [x509.load_der_x509_certificate(raw)]
        # Touch the lazily parsed parts so a damaged certificate fails here, not later.
        for cert in certs:
            _ = cert.subject, cert.issuer, cert.extensions, cert.serial_number
    except PARSE_ERRORS as exc:
        raise MalformedInputError(
            f"not a readable X.509 certificate (PEM or DER expected): {exc}"
        ) from None
    if not certs:
        raise MalformedInputError("no certificate found in the input")
    return certs


def load_certificate(data: bytes) -> x509.Certificate:
    """Exactly one certificate from PEM or DER ``data`` (size-limited, ``MalformedInputError``)."""
    certs = load_certificates(data)
    if len(certs) != 1:
        raise MalformedInputError(
            f"expected one certificate, found {len(certs)}; pass a chain with --chain"
        )
    return certs[0]


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """One certificate signing request from PEM or DER ``data``.

    Size-limited to ``MAX_INPUT_BYTES``. Only parses: the signature and key policy are checked
    by the issuing CA. Raises ``MalformedInputError`` on anything unreadable.
    """
    _check_size(data, "CSR")
    raw = bytes(data)
    try:
        csr = x509.load_pem_x509_csr(raw) if _is_pem(raw) else x509.load_der_x509_csr(raw)
        _ = csr.subject, csr.extensions, csr.signature_algorithm_oid
    except PARSE_ERRORS as exc:
        raise MalformedInputError(
            f"not a readable certificate signing request (PEM or DER expected): {exc}"
        ) from None
    return csr


def sha256_fingerprint(cert: x509.Certificate) -> str:
    """Lower-case hex SHA-256 of the certificate's DER encoding (64 characters, no colons)."""
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
