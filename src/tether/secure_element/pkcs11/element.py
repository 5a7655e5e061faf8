"""``Pkcs11SecureElement``: a ``SecureElement`` whose P-256 keys are generated in the token.

Keys are generated inside the token as sensitive, non-extractable token objects for ECDSA;
the device certificate is stored next to the key as a ``CKO_CERTIFICATE`` with the same
``CKA_LABEL`` and ``CKA_ID``. ``CKA_ID`` is the key's RFC 5280 subject key identifier
(SHA-1 of the public key bits), the convention most PKCS#11 tools follow. What differs
between tokens is the element's ``TokenProfile`` (see ``tether.secure_element.profiles``);
how a label becomes token objects is ``objects.TokenObjects``.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any, Self
from urllib.parse import quote

import pkcs11.exceptions as p11
from asn1crypto.core import Integer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, CertificateType, KeyType, Mechanism, ObjectClass

from tether.errors import TetherError
from tether.secure_element.base import (
    ClosesOnExit,
    KeyProtection,
    SecureElementSigner,
    check_certificate_matches,
    require_p256,
    validate_digest,
    validate_label,
)
from tether.secure_element.errors import (
    KeyNotFoundError,
    LabelInUseError,
    TokenFullError,
    TokenOperationError,
    map_pkcs11_error,
)
from tether.secure_element.pkcs11.module import Pkcs11Config
from tether.secure_element.pkcs11.objects import TokenObjects
from tether.secure_element.pkcs11.session import KeyObjects, acquire_session, release_session
from tether.secure_element.profiles import TokenProfile

_RAW_SIGNATURE_SIZE = 64


class Pkcs11SecureElement(TokenObjects, ClosesOnExit):
    """A ``SecureElement`` whose keys live in a PKCS#11 token and never leave it.

    Open with ``Pkcs11SecureElement.open(module, token_label, pin)`` (or ``from_config``),
    use as a context manager, and close it: the login is shared per token in the process.
    """

    @classmethod
    def open(cls, module: str, token_label: str, pin: str) -> Self:
        """Log in to the token labelled ``token_label`` in the PKCS#11 library ``module``.

        Raises ``Pkcs11ModuleError`` (module missing or not loadable), ``TokenNotFoundError``,
        ``WrongPinError`` or ``PinLockedError``.
        """
        return cls.from_config(Pkcs11Config(module=module, token_label=token_label, pin=pin))

    @classmethod
    def from_config(cls, config: Pkcs11Config) -> Self:
        """Like ``open``, from a ``Pkcs11Config``."""
        session_key, shared = acquire_session(config)
        return cls(config, session_key, shared)

    @property
    def is_emulator(self) -> bool:
        return False

    @property
    def profile(self) -> TokenProfile:
        """The kind of token, as this element treats it (templates, limits)."""
        return self._profile

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            release_session(self._session_key)

    # -- SecureElement -----------------------------------------------------------------

    def generate_key(self, label: str) -> ec.EllipticCurvePublicKey:
        """Generate a P-256 key pair inside the token under ``label``.

        The private key is a token object with CKA_SENSITIVE, not CKA_EXTRACTABLE, private,
        and for signing (no unwrap or derive; no decrypt where the token allows, see
        ``profiles``). Raises ``LabelInUseError`` if any object carries the label; if a step
        after generation fails, both halves are destroyed. ``TokenFullError`` when the token
        has no room for another key.
        """
        validate_label(label)
        # Always asked of the token (not the cache): the one search a factory unit costs.
        if self._objects({Attribute.LABEL: label}, f"check label {label!r}"):
            raise LabelInUseError(
                f"Token {self.token_label!r} already has an object labelled {label!r}; "
                "nothing was generated. Use another label or delete the old key first."
            )
        self._forget(label)  # the token has nothing under it: any cached entry is stale
        self._reserve_key(label)  # may reopen the session: take it only afterwards
        session = self._live_session()
        try:
            public, private = session.generate_keypair(
                KeyType.EC,
                store=True,
                label=label,
                capabilities=self._profile.capabilities,
                public_template=dict(self._profile.public_template),
                private_template=dict(self._profile.private_template),
            )
        except p11.PKCS11Error as exc:
            self._shared.used.discard(label)
            raise self._keygen_error(exc, label) from exc
        try:
            key = self._public_key_from_object(public, label)
            key_id = x509.SubjectKeyIdentifier.from_public_key(key).digest
            public[Attribute.ID] = key_id
            private[Attribute.ID] = key_id
        except BaseException as exc:
            self._destroy_quietly([public, private])
            if isinstance(exc, p11.PKCS11Error):
                raise map_pkcs11_error(exc, f"set the id of key {label!r}") from exc
            raise
        # What was just written, so that signing, storing the certificate and describing the
        # key need no search: nothing else carried the label a moment ago.
        self._shared.keys[label] = KeyObjects(
            private=private, publics=[public], certificates=[], key_id=key_id, public_key=key
        )
        return key

    def _keygen_error(self, exc: p11.PKCS11Error, label: str) -> TetherError:
        """The error for a failed generation, with the profile's hint for CKR_GENERAL_ERROR."""
        error = map_pkcs11_error(exc, f"generate key {label!r}")
        if not isinstance(exc, p11.GeneralError) or not self._profile.keygen_failure_hint:
            return error
        message = f"{error.message}{self._profile.keygen_failure_hint}"
        if self._profile.full_reported_as_general_error:
            return TokenFullError(message)
        return TokenOperationError(message)

    def public_key(self, label: str) -> ec.EllipticCurvePublicKey:
        """The public half of the key under ``label``, from its public key object.

        Falls back to the stored certificate when the token keeps no public key object
        (some tokens only store the private half). ``KeyNotFoundError`` if neither exists.
        """
        validate_label(label)
        entry = self._cache().get(label)
        if entry is not None and entry.public_key is not None:
            return entry.public_key
        publics = self._objects(
            {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: label},
            f"look up public key {label!r}",
        )
        if publics:
            return self._public_key_from_object(publics[0], label)
        self._key(label)  # KeyNotFoundError when there is no key at all
        cert = self.certificate(label)
        if cert is None:
            raise KeyNotFoundError(
                f"Key {label!r} in token {self.token_label!r} has neither a public key object "
                "nor a certificate, so its public key cannot be read. Re-create the key."
            )
        return require_p256(cert.public_key(), f"in the certificate labelled {label!r}")

    def sign_digest(self, label: str, digest: bytes) -> bytes:
        """Sign a 32-byte SHA-256 ``digest`` with CKM_ECDSA in the token; DER signature out."""
        validate_digest(digest)
        self._reserve_key(label)
        try:
            raw = self._with_key(
                label, lambda entry: entry.private.sign(digest, mechanism=Mechanism.ECDSA)
            )
        except p11.PKCS11Error as exc:
            raise map_pkcs11_error(exc, f"sign with key {label!r}") from exc
        if len(raw) != _RAW_SIGNATURE_SIZE:
            raise TokenOperationError(
                f"Token {self.token_label!r} returned a {len(raw)}-byte ECDSA signature; a "
                "P-256 signature is 64 bytes (r||s). The module is not behaving per PKCS#11."
            )
        r = int.from_bytes(raw[:32], "big")
        s = int.from_bytes(raw[32:], "big")
        return encode_dss_signature(r, s)

    def signer(self, label: str) -> SecureElementSigner:
        """A ``Signer`` over the key (e.g. an issuing CA key); valid while this element is open."""
        self._key(label)
        return SecureElementSigner(self, label)

    def store_certificate(self, label: str, cert: x509.Certificate) -> None:
        """Store ``cert`` as the X.509 certificate object of the key, replacing an old one.

        Refuses (``CertificateMismatchError``) a certificate for another public key. The new
        object is created before the old one is destroyed, so the key is never left with
        no certificate; if destroying the old one fails, the new one is removed again.
        """
        self._key(label)
        check_certificate_matches(label, self.public_key(label), cert)
        key_id = self._key_id(label)
        entry = self._key(label)
        attrs = {
            Attribute.CLASS: ObjectClass.CERTIFICATE,
            Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
            Attribute.TOKEN: True,
            Attribute.PRIVATE: False,
            Attribute.LABEL: label,
            Attribute.ID: key_id,
            Attribute.SUBJECT: cert.subject.public_bytes(),
            Attribute.ISSUER: cert.issuer.public_bytes(),
            Attribute.SERIAL_NUMBER: Integer(cert.serial_number).dump(),
            Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
        }
        try:
            new = self._live_session().create_object(attrs)
        except p11.PKCS11Error as exc:
            raise map_pkcs11_error(exc, f"store the certificate of {label!r}") from exc
        try:
            for obj in entry.certificates:
                # Already gone (removed by another process) is what destroying wants.
                with contextlib.suppress(p11.ObjectHandleInvalid):
                    obj.destroy()
        except p11.PKCS11Error as exc:
            self._forget(label)  # some old ones may be gone: let the next use search again
            self._destroy_quietly([new])
            raise map_pkcs11_error(exc, f"replace the certificate of {label!r}") from exc
        entry.certificates = [new]

    def certificate(self, label: str) -> x509.Certificate | None:
        """The certificate stored with the key, or None; ``KeyNotFoundError`` if no such key."""
        validate_label(label)
        entry = self._cache().get(label)
        if entry is not None:
            if not entry.certificates:
                return None
            try:
                return self._parse_certificate(entry.certificates[0], label)
            except p11.ObjectHandleInvalid:
                self._forget(label)  # removed by another process: ask the token below
            except p11.PKCS11Error as exc:
                raise map_pkcs11_error(exc, f"read the certificate of {label!r}") from exc
        certs = self._certificate_objects(label)
        if not certs:
            self._key(label)
            return None
        try:
            return self._parse_certificate(certs[0], label)
        except p11.PKCS11Error as exc:
            raise map_pkcs11_error(exc, f"read the certificate of {label!r}") from exc

    def _parse_certificate(self, obj: Any, label: str) -> x509.Certificate:
        """The certificate in ``obj``; python-pkcs11 errors are left to the caller."""
        der = obj[Attribute.VALUE]
        try:
            return x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise TokenOperationError(
                f"The certificate object labelled {label!r} in token {self.token_label!r} is "
                "not valid DER; store the certificate again."
            ) from exc

    def labels(self) -> list[str]:
        """Labels of all private keys in the token, sorted."""
        keys = self._objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}, "list keys")
        try:
            return sorted({key[Attribute.LABEL] for key in keys})
        except p11.PKCS11Error as exc:
            raise map_pkcs11_error(exc, "list keys") from exc

    def delete(self, label: str) -> None:
        """Destroy the key pair and certificate under ``label``; ``KeyNotFoundError`` if absent."""
        validate_label(label)
        self._forget(label)  # destroy what the token holds now, not what was cached
        entry = self._key(label)
        self._forget(label)
        try:
            # Certificate and public key first: a failure leaves the key usable, not orphaned.
            for obj in [*entry.certificates, *entry.publics, entry.private]:
                obj.destroy()
        except p11.PKCS11Error as exc:
            raise map_pkcs11_error(exc, f"delete key {label!r}") from exc

    def describe_key(self, label: str) -> str:
        """The RFC 7512 PKCS#11 URI of the private key (token, object, id; no PIN, no module).

        Usable as-is by OpenSSL's pkcs11 engine and awscrt once a PIN is supplied.
        """
        key_id = self._key_id(label)
        token = quote(self.token_label, safe="")
        pct_id = "".join(f"%{byte:02x}" for byte in key_id)
        return f"pkcs11:token={token};object={quote(label, safe='')};id={pct_id};type=private"

    def key_protection(self, label: str) -> KeyProtection:
        """The token's own protection attributes of the private key, and whether it gives it up.

        Reads CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE
        (None where the token does not report one) and asks for CKA_VALUE: a token that
        refuses is the proof that the key cannot be read out. Changes nothing in the token.
        """
        validate_label(label)
        self._forget(label)  # rare and about the token's truth: read it from a fresh search
        location = self.describe_key(label)
        private = self._key(label).private
        flags = {
            attribute: self._optional_attribute(private, attribute, label)
            for attribute in (
                Attribute.SENSITIVE,
                Attribute.EXTRACTABLE,
                Attribute.ALWAYS_SENSITIVE,
                Attribute.NEVER_EXTRACTABLE,
            )
        }
        try:
            private[Attribute.VALUE]
            refused = False
        except (p11.AttributeSensitive, p11.AttributeTypeInvalid):
            refused = True
        except p11.PKCS11Error as exc:
            raise map_pkcs11_error(exc, f"check whether key {label!r} can be read") from exc
        token = self._live_session().token
        protection = KeyProtection(
            location=location,
            is_emulator=False,
            summary="",
            sensitive=flags[Attribute.SENSITIVE],
            extractable=flags[Attribute.EXTRACTABLE],
            always_sensitive=flags[Attribute.ALWAYS_SENSITIVE],
            never_extractable=flags[Attribute.NEVER_EXTRACTABLE],
            value_read_refused=refused,
            token_manufacturer=str(token.manufacturer_id).strip(),
            token_model=str(token.model).strip(),
            token_serial=bytes(token.serial).decode("utf-8", errors="replace").strip(),
        )
        if protection.cannot_leave:
            summary = (
                f"The key is inside PKCS#11 token {self.token_label!r}, marked sensitive and "
                "not extractable; the token refused to return its value."
            )
        else:
            summary = (
                f"WARNING: the key in PKCS#11 token {self.token_label!r} is not fully protected "
                f"(sensitive={protection.sensitive}, extractable={protection.extractable}, "
                f"value read refused={refused}); generate a new key inside the token."
            )
        return replace(protection, summary=summary)

    def _optional_attribute(self, obj: Any, attribute: Attribute, label: str) -> bool | None:
        try:
            return bool(obj[attribute])
        except p11.AttributeTypeInvalid:
            return None
        except p11.PKCS11Error as exc:
            raise map_pkcs11_error(exc, f"read {attribute.name} of key {label!r}") from exc

    @staticmethod
    def _destroy_quietly(objects: list[Any]) -> None:
        for obj in objects:
            # Cleanup after a failure: report the original error, not this one.
            with contextlib.suppress(p11.PKCS11Error):
                obj.destroy()
