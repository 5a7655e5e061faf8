"""P-256 keys, and CA keys encrypted at rest.

A CA key file is standard PKCS#8 ``EncryptedPrivateKeyInfo`` (PEM "ENCRYPTED PRIVATE KEY"):
PBES2 with PBKDF2-HMAC-SHA256 at ``PBKDF2_ITERATIONS`` (600,000, the OWASP 2023 figure) and
a 16-byte random salt, then AES-256-CBC. ``cryptography``'s ``BestAvailableEncryption`` uses
only 2,048 PBKDF2 iterations for PKCS#8 and offers no knob, so the structure is built here
with ``asn1crypto``. PBKDF2 rather than scrypt: OpenSSL, ``cryptography`` and every HSM
import tool read it, so the ceremony key can be recovered with standard tools
(``openssl pkey -in ca.key.pem``).
"""

from __future__ import annotations

import os

from asn1crypto import algos, keys, pem
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.algorithms import AES
from cryptography.hazmat.primitives.ciphers.modes import CBC
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from tether.pki.errors import UnsupportedKeyError, WeakPassphraseError, WrongPassphraseError

PBKDF2_ITERATIONS = 600_000
MIN_PASSPHRASE_CHARS = 8


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def require_p256(key: object, what: str = "key") -> ec.EllipticCurvePublicKey:
    """Return ``key`` if it is an EC P-256 public key, else raise ``UnsupportedKeyError``."""
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UnsupportedKeyError(
            f"the {what} is {type(key).__name__.removeprefix('_')}; Tether accepts only "
            "ECDSA P-256 (secp256r1) keys"
        )
    if not isinstance(key.curve, ec.SECP256R1):
        raise UnsupportedKeyError(
            f"the {what} is on curve {key.curve.name}; Tether accepts only P-256 (secp256r1)"
        )
    return key


def check_new_passphrase(passphrase: str) -> None:
    """Refuse a passphrase for a new key that is shorter than ``MIN_PASSPHRASE_CHARS``."""
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise WeakPassphraseError(
            f"the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters; "
            "use a long random passphrase for a CA key"
        )


def encrypt_private_key(
    key: ec.EllipticCurvePrivateKey, passphrase: str, *, iterations: int = PBKDF2_ITERATIONS
) -> bytes:
    """PEM ``ENCRYPTED PRIVATE KEY`` (PKCS#8, PBES2/PBKDF2-SHA256/AES-256-CBC) for ``key``."""
    plain = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    salt = os.urandom(16)
    iv = os.urandom(16)
    derived = PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations
    ).derive(passphrase.encode("utf-8"))
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(AES(derived), CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    info = keys.EncryptedPrivateKeyInfo(
        {
            "encryption_algorithm": algos.EncryptionAlgorithm(
                {
                    "algorithm": "pbes2",
                    "parameters": algos.Pbes2Params(
                        {
                            "key_derivation_func": algos.KdfAlgorithm(
                                {
                                    "algorithm": "pbkdf2",
                                    "parameters": algos.Pbkdf2Params(
                                        {
                                            "salt": algos.Pbkdf2Salt(name="specified", value=salt),
                                            "iteration_count": iterations,
                                            "prf": algos.HmacAlgorithm({"algorithm": "sha256"}),
                                        }
                                    ),
                                }
                            ),
                            "encryption_scheme": algos.EncryptionAlgorithm(
                                {"algorithm": "aes256_cbc", "parameters": iv}
                            ),
                        }
                    ),
                }
            ),
            "encrypted_data": ciphertext,
        }
    )
    encoded: bytes = pem.armor("ENCRYPTED PRIVATE KEY", info.dump())
    return encoded


def decrypt_private_key(data: bytes, passphrase: str) -> ec.EllipticCurvePrivateKey:
    """Open an encrypted PKCS#8 PEM key; a wrong passphrase raises ``WrongPassphraseError``.

    The key must be ECDSA P-256 (``UnsupportedKeyError`` otherwise).
    """
    try:
        key = serialization.load_pem_private_key(data, password=passphrase.encode("utf-8"))
    except (ValueError, TypeError):
        raise WrongPassphraseError(
            "the passphrase does not open the CA key (or the key file is damaged); "
            "check the passphrase and try again"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UnsupportedKeyError("the CA key is not an EC key; Tether CA keys are ECDSA P-256")
    require_p256(key.public_key(), "CA key")
    return key


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM, for keys that a service must load unattended (server keys)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
