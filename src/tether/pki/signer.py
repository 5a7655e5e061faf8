"""What a CA (or a CSR builder) needs from a private key: its public half and a signature.

Tether signs certificates, CRLs and CSRs with keys it may never hold: a key in a PKCS#11
token or a secure element only signs. ``Signer`` is that contract. ``SoftwareSigner`` wraps a
``cryptography`` key (a CA key from an encrypted file); the secure element package provides
signers whose keys stay inside the token.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec


@runtime_checkable
class Signer(Protocol):
    """An ECDSA P-256 key that can sign but need not be readable."""

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half, for subject key identifiers and for checking signatures."""
        ...

    def sign(self, data: bytes) -> bytes:
        """ECDSA with SHA-256 over ``data``; the signature DER-encoded (``Ecdsa-Sig-Value``)."""
        ...


class SoftwareSigner:
    """A signer over a key held in memory by ``cryptography``.

    The private key is exposed as ``private_key`` only so that certificate builders can take
    ``cryptography``'s own fast path; nothing else should reach for it.
    """

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError("Tether keys are ECDSA P-256")
        self.private_key = private_key

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data, ec.ECDSA(hashes.SHA256()))
