"""The one interface of a key that signs but never leaves, and the checks both backends share.

A secure element holds ECDSA P-256 key pairs under labels. It generates them inside, hands
out the public half, signs SHA-256 digests, and keeps the device certificate next to the
key. No method returns private key material: that is the point of the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tether.pki.names import SERIAL_PATTERN
from tether.pki.signer import Signer
from tether.secure_element.errors import (
    CertificateMismatchError,
    InvalidDigestError,
    InvalidLabelError,
    UnsupportedKeyError,
)

# A key is labelled with the device serial it belongs to, so a label follows the profile's
# one serial grammar. Labels also end up in file names (emulator) and PKCS#11 URIs
# (pkcs11:object=...): the grammar's characters need no escaping in either place.
LABEL_PATTERN = SERIAL_PATTERN

DIGEST_SIZE = 32


def validate_label(label: str) -> str:
    """Return ``label`` unchanged if it is a valid key label, else raise ``InvalidLabelError``.

    Valid: 1-64 characters, letters, digits, ``.``, ``_`` and ``-``, starting with a letter
    or digit.
    """
    if not isinstance(label, str) or LABEL_PATTERN.fullmatch(label) is None:
        raise InvalidLabelError(
            f"Invalid key label {label!r}: use 1-64 characters from A-Z a-z 0-9 . _ - "
            "starting with a letter or digit."
        )
    return label


def validate_digest(digest: bytes) -> bytes:
    """Return ``digest`` if it is 32 bytes (a SHA-256 digest), else raise ``InvalidDigestError``."""
    if not isinstance(digest, bytes) or len(digest) != DIGEST_SIZE:
        size = len(digest) if isinstance(digest, bytes | bytearray) else type(digest).__name__
        raise InvalidDigestError(
            f"sign_digest needs a 32-byte SHA-256 digest, got {size}. Hash the data with "
            "SHA-256 first, or use signer(label).sign(data)."
        )
    return digest


def require_p256(key: object, where: str) -> ec.EllipticCurvePublicKey:
    """Return ``key`` as a P-256 public key or raise ``UnsupportedKeyError`` naming ``where``."""
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise UnsupportedKeyError(
            f"The key {where} is not an ECDSA P-256 key; Tether only uses P-256."
        )
    return key


def spki_der(key: ec.EllipticCurvePublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo of ``key``: the form in which two keys are compared."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_certificate_matches(
    label: str, key: ec.EllipticCurvePublicKey, cert: x509.Certificate
) -> None:
    """Raise ``CertificateMismatchError`` unless ``cert`` certifies exactly ``key``."""
    cert_key = cert.public_key()
    if not isinstance(cert_key, ec.EllipticCurvePublicKey) or spki_der(cert_key) != spki_der(key):
        raise CertificateMismatchError(
            f"The certificate for {cert.subject.rfc4514_string()!r} does not certify the key "
            f"under label {label!r}; nothing was stored. Store the certificate issued for "
            "this key's CSR."
        )


@dataclass(frozen=True)
class KeyProtection:
    """How one key is protected, as its store reports it: read-only facts, never key material.

    ``location`` is ``describe_key``'s answer (a PKCS#11 URI or ``emulator:<path>``) and
    ``summary`` one plain sentence for people. For a PKCS#11 key the flags are the token's
    own ``CKA_SENSITIVE``, ``CKA_EXTRACTABLE``, ``CKA_ALWAYS_SENSITIVE`` and
    ``CKA_NEVER_EXTRACTABLE`` (None where the token does not report one), and
    ``value_read_refused`` says whether the token refused to return ``CKA_VALUE``. For the
    emulator the flags are None: the key is a passphrase-encrypted file, and ``summary`` says so.
    """

    location: str
    is_emulator: bool
    summary: str
    sensitive: bool | None = None
    extractable: bool | None = None
    always_sensitive: bool | None = None
    never_extractable: bool | None = None
    value_read_refused: bool | None = None
    token_manufacturer: str | None = None
    token_model: str | None = None
    token_serial: str | None = None

    @property
    def cannot_leave(self) -> bool:
        """True only for a token key that is sensitive, not extractable, and refused a read."""
        return (
            not self.is_emulator
            and self.sensitive is True
            and self.extractable is False
            and self.value_read_refused is True
        )


@runtime_checkable
class SecureElement(Protocol):
    """A store of P-256 keys that sign but never leave, with one certificate per key.

    Implementations: ``Pkcs11SecureElement`` (a real token) and ``EmulatedSecureElement``
    (encrypted files, for a quick start; ``is_emulator`` is true). All methods raise
    ``TetherError`` subclasses and leave the store unchanged when they fail.
    """

    @property
    def is_emulator(self) -> bool:
        """True when keys live in files on the host, not in hardware or a token."""
        ...

    def generate_key(self, label: str) -> ec.EllipticCurvePublicKey:
        """Generate a P-256 key pair under ``label``; ``LabelInUseError`` if the label is used."""
        ...

    def public_key(self, label: str) -> ec.EllipticCurvePublicKey:
        """The public half of the key under ``label``; ``KeyNotFoundError`` if absent."""
        ...

    def sign_digest(self, label: str, digest: bytes) -> bytes:
        """ECDSA over a 32-byte SHA-256 ``digest``; the DER ``Ecdsa-Sig-Value``."""
        ...

    def signer(self, label: str) -> Signer:
        """A ``tether.pki.signer.Signer`` over the key; valid while this element is open."""
        ...

    def store_certificate(self, label: str, cert: x509.Certificate) -> None:
        """Store (or replace) the key's certificate; refuses one for another public key."""
        ...

    def certificate(self, label: str) -> x509.Certificate | None:
        """The key's certificate, or None if none was stored yet."""
        ...

    def labels(self) -> list[str]:
        """The labels of all keys, sorted."""
        ...

    def delete(self, label: str) -> None:
        """Destroy the key and its certificate; ``KeyNotFoundError`` if absent."""
        ...

    def describe_key(self, label: str) -> str:
        """Where the key lives, for records and logs (a PKCS#11 URI, no PIN); never secret."""
        ...

    def key_protection(self, label: str) -> KeyProtection:
        """How the key is protected (token attributes, or the emulator's file); changes nothing."""
        ...

    def close(self) -> None:
        """Release the session or file handles; the element is unusable afterwards."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class ClosesOnExit:
    """``with element:`` closes the element on the way out; both backends' context manager.

    The subclass defines ``close`` (idempotent): leaving the block calls it, error or not.
    """

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SecureElementSigner:
    """A ``tether.pki.signer.Signer`` over one key of a secure element.

    ``sign(data)`` hashes ``data`` with SHA-256 on the host and has the element sign the
    digest (tokens such as SoftHSM offer raw ``CKM_ECDSA`` only). The signer holds no key
    material; it is valid while its element is open.
    """

    def __init__(self, element: SecureElement, label: str) -> None:
        self._element = element
        self._label = label
        self._public_key = element.public_key(label)

    @property
    def label(self) -> str:
        """The label of the key this signer uses."""
        return self._label

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    def sign(self, data: bytes) -> bytes:
        digest = hashes.Hash(hashes.SHA256())
        digest.update(data)
        return self._element.sign_digest(self._label, digest.finalize())
