"""Check the device key before the handshake and report where it lives.

awscrt reports a wrong PIN or a key that does not match the certificate as an opaque TLS
failure. Checking first gives a clear error, and the facts (where the key lives, whether the
token marks it sensitive and unextractable) are what ``--explain`` shows in step 3.

For a PKCS#11 key the check signs a random challenge inside the token (``CKM_ECDSA`` over a
SHA-256 digest computed here: SoftHSM 2.6 has no ``CKM_ECDSA_SHA256``) and verifies it with
the certificate's public key, so a match proves possession, not just an equal label.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import pkcs11
import pkcs11.exceptions as p11e
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from tether.device.config import DeviceIdentity, FileKey, Pkcs11Key, read_small_file
from tether.device.errors import (
    BadKeyFileError,
    KeyCertificateMismatchError,
    Pkcs11KeyNotFoundError,
    Pkcs11ModuleError,
    Pkcs11OperationError,
    Pkcs11TokenNotFoundError,
    Pkcs11WrongPinError,
)

P256_COORDINATE_BYTES = 32


@dataclass(frozen=True)
class KeyFacts:
    """Where the device key lives and what the token says about it (all values as text)."""

    kind: str  # "pkcs11" or "file"
    location: str
    facts: dict[str, str]


def check_key(identity: DeviceIdentity) -> KeyFacts:
    """Prove the key source holds the private key of ``identity``'s certificate.

    Raises ``key_certificate_mismatch`` when it does not, ``bad_key_file`` for an unusable key
    file, and the ``pkcs11_*`` errors for a module, token, PIN or key problem. Changes nothing
    in the token.
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


def _load_module(module: str) -> pkcs11.lib:  # type: ignore[name-defined]
    try:
        return pkcs11.lib(module)
    except (p11e.PKCS11Error, OSError, RuntimeError) as exc:
        raise Pkcs11ModuleError(
            f"cannot load the PKCS#11 module {module}: {exc}; check --pkcs11-module"
        ) from exc


def _find_token(lib: pkcs11.lib, label: str) -> pkcs11.Token:  # type: ignore[name-defined]
    """The token labelled ``label``, re-reading the slots once if it is not there.

    A module initialised earlier in this process (SoftHSM2, for one) lists only the tokens
    that existed then; a token initialised since appears after C_Finalize + C_Initialize.
    """
    try:
        return lib.get_token(token_label=label)
    except p11e.NoSuchToken:
        lib.reinitialize()
        return lib.get_token(token_label=label)


def _check_pkcs11_key(key: Pkcs11Key, public_key: ec.EllipticCurvePublicKey) -> KeyFacts:
    lib = _load_module(key.module)
    try:
        token = _find_token(lib, key.token_label)
    except p11e.NoSuchToken as exc:
        raise Pkcs11TokenNotFoundError(
            f"no token labelled {key.token_label!r} in {key.module}: check --token "
            "(pkcs11-tool --list-token-slots shows the labels)"
        ) from exc
    except p11e.MultipleTokensReturned as exc:
        raise Pkcs11TokenNotFoundError(
            f"more than one token is labelled {key.token_label!r}: relabel one of them"
        ) from exc
    try:
        with token.open(user_pin=key.pin) as session:
            private = session.get_key(
                object_class=pkcs11.ObjectClass.PRIVATE_KEY, label=key.key_label
            )
            facts = _token_facts(key, token, private)
            digest = hashlib.sha256(secrets.token_bytes(32)).digest()
            raw = private.sign(digest, mechanism=pkcs11.Mechanism.ECDSA)
    except (p11e.PinIncorrect, p11e.PinLenRange, p11e.PinInvalid) as exc:
        raise Pkcs11WrongPinError(
            f"the token {key.token_label!r} refused the PIN: set TETHER_PKCS11_PIN or "
            "--pin-file to the token's user PIN"
        ) from exc
    except p11e.PinLocked as exc:
        raise Pkcs11WrongPinError(
            f"the PIN of token {key.token_label!r} is locked: the security officer must reset it"
        ) from exc
    except p11e.NoSuchKey as exc:
        raise Pkcs11KeyNotFoundError(
            f"token {key.token_label!r} has no private key labelled {key.key_label!r}: "
            "check --key-label (pkcs11-tool --list-objects --login)"
        ) from exc
    except p11e.MultipleObjectsReturned as exc:
        raise Pkcs11KeyNotFoundError(
            f"token {key.token_label!r} has more than one private key labelled "
            f"{key.key_label!r}: give each key its own label"
        ) from exc
    except p11e.PKCS11Error as exc:
        raise Pkcs11OperationError(
            f"the token {key.token_label!r} failed: {type(exc).__name__}; "
            "check the token with pkcs11-tool"
        ) from exc
    signature = _der_signature(raw)
    try:
        public_key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except InvalidSignature as exc:
        raise KeyCertificateMismatchError(
            f"the key {key.key_label!r} in token {key.token_label!r} does not belong to the "
            "device certificate: give the certificate issued for that key's CSR"
        ) from exc
    facts["key matches certificate"] = (
        "yes: a random challenge signed inside the token verified with the certificate's public key"
    )
    return KeyFacts(
        kind="pkcs11",
        location=(f"PKCS#11 module {key.module}, token {key.token_label!r}, key {key.key_label!r}"),
        facts=facts,
    )


def _der_signature(raw: bytes) -> bytes:
    """PKCS#11 returns ECDSA as r||s; X.509 and TLS use the DER ``Ecdsa-Sig-Value``."""
    if len(raw) != 2 * P256_COORDINATE_BYTES:
        raise Pkcs11OperationError(
            f"the token returned a {len(raw)}-byte ECDSA signature; a P-256 key gives 64 bytes"
        )
    r = int.from_bytes(raw[:P256_COORDINATE_BYTES], "big")
    s = int.from_bytes(raw[P256_COORDINATE_BYTES:], "big")
    return encode_dss_signature(r, s)


def _attribute(obj: pkcs11.Object, attribute: pkcs11.Attribute) -> str:  # type: ignore[name-defined]
    try:
        value = obj[attribute]
    except p11e.PKCS11Error as exc:
        return f"unreadable ({type(exc).__name__})"
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _token_facts(
    key: Pkcs11Key,
    token: pkcs11.Token,  # type: ignore[name-defined]
    private: pkcs11.PrivateKey,  # type: ignore[name-defined]
) -> dict[str, str]:
    try:
        private[pkcs11.Attribute.VALUE]
        value_read = "the token returned CKA_VALUE: the key is readable"
    except p11e.PKCS11Error as exc:
        value_read = f"refused by the token ({type(exc).__name__})"
    return {
        "key lives in": f"secure element via PKCS#11 (module {key.module})",
        "token": f"{token.label!r} (manufacturer {token.manufacturer_id.strip()!r}, "
        f"model {token.model.strip()!r}, serial {token.serial.decode(errors='replace').strip()!r})",
        "key label": key.key_label,
        "CKA_ID": _attribute(private, pkcs11.Attribute.ID),
        "CKA_SENSITIVE": _attribute(private, pkcs11.Attribute.SENSITIVE),
        "CKA_EXTRACTABLE": _attribute(private, pkcs11.Attribute.EXTRACTABLE),
        "CKA_ALWAYS_SENSITIVE": _attribute(private, pkcs11.Attribute.ALWAYS_SENSITIVE),
        "CKA_NEVER_EXTRACTABLE": _attribute(private, pkcs11.Attribute.NEVER_EXTRACTABLE),
        "reading CKA_VALUE": value_read,
    }
