"""Check the device key before the handshake and report where it lives.

awscrt reports a wrong PIN or a key that does not match the certificate as an opaque TLS
failure. Checking first gives a clear error, and the facts (where the key lives, whether the
token marks it sensitive and unextractable) are what ``--explain`` shows in step 3.

For a PKCS#11 key the check goes through ``tether.secure_element`` (one module cache, one
safe token rescan, one error mapping per process): it signs a random challenge inside the
token and verifies it with the certificate's public key, so a match proves possession, not
just an equal label. The protection facts come from ``key_protection``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tether.device.config import DeviceIdentity, FileKey, Pkcs11Key, read_small_file
from tether.device.errors import BadKeyFileError, KeyCertificateMismatchError
from tether.secure_element import KeyProtection, Pkcs11SecureElement

CHALLENGE_BYTES = 32


@dataclass(frozen=True)
class KeyFacts:
    """Where the device key lives and what the token says about it (all values as text)."""

    kind: str  # "pkcs11" or "file"
    location: str
    facts: dict[str, str]


def check_key(identity: DeviceIdentity) -> KeyFacts:
    """Prove the key source holds the private key of ``identity``'s certificate.

    Raises ``key_certificate_mismatch`` when it does not, ``bad_key_file`` for an unusable key
    file, and the secure element's errors (``se_module_not_found``, ``se_token_not_found``,
    ``se_wrong_pin``, ``se_pin_locked``, ``se_key_not_found``, ``se_invalid_label``, ...) for
    a module, token, PIN or key problem. Changes nothing in the token.
    """
    public_key = identity.load_certificate().public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)  # DeviceIdentity.load checked it
    if isinstance(identity.key, FileKey):
        return _check_file_key(identity.key, public_key)
    return _check_pkcs11_key(identity.key, public_key)


def _check_file_key(key: FileKey, public_key: ec.EllipticCurvePublicKey) -> KeyFacts:
    data = read_small_file(key.path, "device key file")
    try:
        private_key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise BadKeyFileError(
            f"the key file {key.path} is encrypted: awscrt needs an unencrypted PEM key "
            "(or keep the key in a PKCS#11 token)"
        ) from exc
    except ValueError as exc:
        raise BadKeyFileError(
            f"the key file {key.path} is not a PEM private key: give the PEM key file"
        ) from exc
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise BadKeyFileError(f"the key file {key.path} is not an ECDSA key")
    if private_key.public_key() != public_key:
        raise KeyCertificateMismatchError(
            f"the key file {key.path} does not belong to the device certificate: "
            "give the key the certificate was issued for"
        )
    return KeyFacts(
        kind="file",
        location=f"software emulator key file {key.path}",
        facts={
            "key lives in": f"software emulator key file {key.path} "
            "(readable on disk: not a secure element)",
            "key matches certificate": "yes (public key derived from the file equals the "
            "certificate's)",
        },
    )


def _check_pkcs11_key(key: Pkcs11Key, public_key: ec.EllipticCurvePublicKey) -> KeyFacts:
    challenge = secrets.token_bytes(CHALLENGE_BYTES)
    with Pkcs11SecureElement.open(key.module, key.token_label, key.pin) as element:
        signature = element.signer(key.key_label).sign(challenge)
        protection = element.key_protection(key.key_label)
    try:
        public_key.verify(signature, challenge, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise KeyCertificateMismatchError(
            f"the key {key.key_label!r} in token {key.token_label!r} does not belong to the "
            "device certificate: give the certificate issued for that key's CSR"
        ) from exc
    facts = _protection_facts(key, protection)
    facts["key matches certificate"] = (
        "yes: a random challenge signed inside the token verified with the certificate's public key"
    )
    return KeyFacts(
        kind="pkcs11",
        location=(f"PKCS#11 module {key.module}, token {key.token_label!r}, key {key.key_label!r}"),
        facts=facts,
    )


def _flag(value: bool | None) -> str:
    return "not reported by the token" if value is None else str(value)


def _protection_facts(key: Pkcs11Key, protection: KeyProtection) -> dict[str, str]:
    if protection.value_read_refused:
        value_read = "refused by the token"
    else:
        value_read = "the token returned CKA_VALUE: the key is readable"
    return {
        "key lives in": f"secure element via PKCS#11 (module {key.module})",
        "token": f"{key.token_label!r} (manufacturer {protection.token_manufacturer!r}, "
        f"model {protection.token_model!r}, serial {protection.token_serial!r})",
        "key label": key.key_label,
        "PKCS#11 URI": protection.location,
        "CKA_SENSITIVE": _flag(protection.sensitive),
        "CKA_EXTRACTABLE": _flag(protection.extractable),
        "CKA_ALWAYS_SENSITIVE": _flag(protection.always_sensitive),
        "CKA_NEVER_EXTRACTABLE": _flag(protection.never_extractable),
        "reading CKA_VALUE": value_read,
        "protection": protection.summary,
    }
