"""Secure element backed by a PKCS#11 token (SoftHSM2 in development, a TPM, vendor modules).

Keys are generated inside the token as sensitive, non-extractable token objects for ECDSA;
the device certificate is stored next to the key as a ``CKO_CERTIFICATE`` with the same
``CKA_LABEL`` and ``CKA_ID``. ``CKA_ID`` is the key's RFC 5280 subject key identifier
(SHA-1 of the public key bits), the convention most PKCS#11 tools follow.

What differs between tokens (key templates, how many keys a session may hold, what an
initialisation failure means) is a ``TokenProfile`` (see ``profiles``), chosen from the
module's file name or given in ``Pkcs11Config``: this module has no token-specific branches.

Two PKCS#11 facts shape this module:

* A module is loaded and ``C_Initialize``\\ d once per process, and login state is per
  application and token: ``C_Logout`` on one session logs out every session on that token.
  So sessions are shared per (module, slot) with a reference count; a second ``open`` of the
  same token checks the PIN against the one that opened it.
* Many modules (SoftHSM2 among them) read their slot list at ``C_Initialize``: a token
  initialised later is invisible until the module is re-initialised. When a token is not
  found and this process holds no session on that module, the module is re-initialised
  once and the lookup retried. Re-initialising ends every session on the module in the
  process, including ones opened by other libraries through python-pkcs11.
* Another library (awscrt) may have initialised the module first; python-pkcs11 cannot
  load it then, so the module is "borrowed" (see ``_borrow_initialised_module``) and never
  re-initialised by Tether.
* SoftHSM's file object store reads every object in the token on each object search, so a
  search gets slower as the token fills (a factory line keeps thousands of keys in one
  token). The handles of objects found or made are therefore kept per shared session (see
  ``_KeyObjects``): a factory unit costs one search, the "is the label free?" check. The
  cache assumes this process is the only one changing the labels it works on while it holds
  the session; an object another process removed is noticed when the token calls its handle
  invalid, and looked up afresh once.
* Some modules keep every key a session used loaded in the device (tpm2-pkcs11 on a TPM,
  whose object slots are few). A profile with ``keys_per_session`` makes the shared session
  close and reopen (same PIN) before it would hold more keys than that; the handle cache is
  dropped with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import pkcs11
import pkcs11.exceptions as p11
from asn1crypto.core import Integer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import (
    Attribute,
    CertificateType,
    KeyType,
    Mechanism,
    ObjectClass,
    _pkcs11,  # the extension type itself, see _borrow_initialised_module
)
from pkcs11.util.ec import encode_ec_public_key

from tether.errors import TetherError
from tether.secure_element.base import (
    KeyProtection,
    SecureElementSigner,
    check_certificate_matches,
    require_p256,
    validate_digest,
    validate_label,
)
from tether.secure_element.errors import (
    ElementClosedError,
    KeyNotFoundError,
    LabelInUseError,
    Pkcs11ModuleError,
    TokenFullError,
    TokenNotFoundError,
    TokenNotReadyError,
    TokenOperationError,
    UnsupportedKeyError,
    WrongPinError,
    map_pkcs11_error,
)
from tether.secure_element.profiles import P256_PARAMS, TokenProfile, profile_for_module

_RAW_SIGNATURE_SIZE = 64
_T = TypeVar("_T")


@dataclass(frozen=True)
class Pkcs11Config:
    """Where a token is and how to log in: module path, token label, user PIN (never shown).

    ``profile`` names the kind of token (see ``profiles``); None picks it from the module's
    file name.
    """

    module: str
    token_label: str
    pin: str = field(repr=False)
    profile: TokenProfile | None = None

    @property
    def token_profile(self) -> TokenProfile:
        """The explicit profile, else the one for the module's file name."""
        return self.profile if self.profile is not None else profile_for_module(self.module)


@dataclass
class _KeyObjects:
    """The token objects under one label, as this process last found or made them.

    ``private`` is a validated P-256 private key; ``publics`` and ``certificates`` (X.509
    only) are every such object carrying the label. ``key_id`` and ``public_key`` are filled
    in when first read. Only ever built from a search or a generation in this session.
    """

    private: Any
    publics: list[Any]
    certificates: list[Any]
    key_id: bytes | None = None
    public_key: ec.EllipticCurvePublicKey | None = None


@dataclass
class _SharedSession:
    session: Any  # pkcs11.Session; python-pkcs11's own class is untyped at runtime
    token: Any  # pkcs11.Token, to reopen the session (see ``_reserve_key``)
    pin_digest: bytes
    users: int
    # Label -> objects found or made through this session (see the module docstring). Shared
    # by every element on the token, so a delete through one is seen by the others; dropped
    # with the session, so handles never outlive the login they were found under.
    keys: dict[str, _KeyObjects] = field(default_factory=dict)
    # Labels whose keys this session generated or signed with: what a module such as
    # tpm2-pkcs11 keeps loaded until the session closes (see TokenProfile.keys_per_session).
    used: set[str] = field(default_factory=set)


# Process-wide PKCS#11 state: see the module docstring for why sessions are shared.
_LOCK = threading.RLock()
_SESSIONS: dict[tuple[str, int], _SharedSession] = {}
_LIBS: dict[str, Any] = {}
_BORROWED: set[str] = set()  # modules C_Initialize'd by another library in this process


def _pin_digest(pin: str) -> bytes:
    return hashlib.sha256(pin.encode("utf-8")).digest()


def _load_module(module: str, profile: TokenProfile) -> Any:
    lib = _LIBS.get(module)
    if lib is not None:
        return lib
    try:
        lib = pkcs11.lib(module)
    except p11.PKCS11Error as exc:
        if isinstance(exc, p11.GeneralError) and profile.unreachable_hint:
            # The library loaded but C_Initialize failed: for a TPM, the TPM is not there.
            # Nothing is cached, so a later open retries once the TPM is up.
            raise TokenNotFoundError(
                f"Cannot initialise the PKCS#11 module {module!r} (CKR_GENERAL_ERROR)."
                + profile.unreachable_hint
            ) from exc
        # python-pkcs11 has no class for CKR_CRYPTOKI_ALREADY_INITIALIZED, only this message.
        if "already initialized" not in str(exc):
            raise Pkcs11ModuleError(
                f"Cannot load the PKCS#11 module {module!r}: {exc}. Give the path of the "
                "vendor's PKCS#11 shared library (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)."
            ) from exc
        lib = _borrow_initialised_module(module)
    _LIBS[module] = lib
    return lib


def _borrow_initialised_module(module: str) -> Any:
    """Use a module another library in this process (e.g. awscrt) already initialised.

    python-pkcs11 insists on calling C_Initialize itself and fails when someone else did it
    first. Its extension type loads the function list in ``__cinit__`` and initialises only in
    ``__init__``, so constructing it without ``__init__`` gives a working handle on the
    already-initialised module. Such a module is never re-initialised (that would pull it
    away from its owner).
    """
    try:
        lib = _pkcs11.lib.__new__(_pkcs11.lib, module)
    except p11.PKCS11Error as exc:  # pragma: no cover - it loaded a moment ago
        raise Pkcs11ModuleError(f"Cannot load the PKCS#11 module {module!r}: {exc}.") from exc
    _BORROWED.add(module)
    return lib


def _module_in_use(module: str) -> bool:
    return any(key[0] == module for key in _SESSIONS)


def _find_token(lib: Any, module: str, token_label: str) -> Any:
    for attempt in range(2):
        try:
            return lib.get_token(token_label=token_label)
        except p11.NoSuchToken as exc:
            if attempt == 0 and not _module_in_use(module) and module not in _BORROWED:
                # Pick up tokens initialised since C_Initialize (see module docstring).
                try:
                    lib.reinitialize()
                except p11.PKCS11Error as reinit_exc:
                    raise map_pkcs11_error(reinit_exc, "rescan the token slots") from reinit_exc
                continue
            hint = (
                " (the module is in use in this process, so tokens initialised since it was "
                "loaded may not be visible until it is released or the process restarts)"
                if _module_in_use(module) or module in _BORROWED
                else ""
            )
            raise TokenNotFoundError(
                f"No token labelled {token_label!r} in {module!r}{hint}. List the tokens "
                "with `pkcs11-tool --module ... --list-token-slots` and check the label."
            ) from exc
        except p11.MultipleTokensReturned as exc:
            raise TokenNotReadyError(
                f"More than one token is labelled {token_label!r} in {module!r}; give each "
                "token a unique label."
            ) from exc
        except p11.PKCS11Error as exc:
            raise map_pkcs11_error(exc, f"look up token {token_label!r}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _open_session(token: Any, config: Pkcs11Config) -> Any:
    """A read-write session on ``token`` logged in as the user; errors mapped."""
    try:
        return token.open(user_pin=config.pin, rw=True)
    except p11.UserAlreadyLoggedIn:
        # Another library in this process (e.g. awscrt) logged in to this token; login
        # state is shared, so an unauthenticated session is already a user session.
        try:
            return token.open(rw=True)
        except p11.PKCS11Error as exc:
            raise map_pkcs11_error(exc, f"open token {config.token_label!r}") from exc
    except p11.PKCS11Error as exc:
        raise map_pkcs11_error(exc, f"log in to token {config.token_label!r}") from exc


def _acquire_session(config: Pkcs11Config) -> tuple[tuple[str, int], _SharedSession]:
    with _LOCK:
        lib = _load_module(config.module, config.token_profile)
        token = _find_token(lib, config.module, config.token_label)
        key = (config.module, int(token.slot.slot_id))
        shared = _SESSIONS.get(key)
        if shared is not None:
            if not hmac.compare_digest(shared.pin_digest, _pin_digest(config.pin)):
                raise WrongPinError(
                    f"The PIN for token {config.token_label!r} differs from the one this "
                    "process logged in with. Check the PIN."
                )
            shared.users += 1
            return key, shared
        session = _open_session(token, config)
        shared = _SharedSession(session, token, _pin_digest(config.pin), 1)
        _SESSIONS[key] = shared
        return key, shared


def _release_session(key: tuple[str, int]) -> None:
    with _LOCK:
        shared = _SESSIONS.get(key)
        if shared is None:
            return
        shared.users -= 1
        if shared.users > 0:
            return
        del _SESSIONS[key]
        # Closing is best effort: the token may be gone, which is the same outcome.
        with contextlib.suppress(p11.PKCS11Error):
            shared.session.close()


class Pkcs11SecureElement:
    """A ``SecureElement`` whose keys live in a PKCS#11 token and never leave it.

    Open with ``Pkcs11SecureElement.open(module, token_label, pin)`` (or ``from_config``),
    use as a context manager, and close it: the login is shared per token in the process.
    """

    def __init__(
        self, config: Pkcs11Config, session_key: tuple[str, int], shared: _SharedSession
    ) -> None:
        """Internal: use ``open`` or ``from_config``."""
        self._config = config
        self._profile = config.token_profile
        self._session_key = session_key
        self._shared = shared
        self._closed = False

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
        session_key, shared = _acquire_session(config)
        return cls(config, session_key, shared)

    @property
    def is_emulator(self) -> bool:
        return False

    @property
    def token_label(self) -> str:
        """The label of the token this element is logged in to."""
        return self._config.token_label

    @property
    def profile(self) -> TokenProfile:
        """The kind of token, as this element treats it (templates, limits)."""
        return self._profile

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release_session(self._session_key)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _live_session(self) -> Any:
        if self._closed:
            raise ElementClosedError(
                f"The secure element on token {self.token_label!r} is closed; open it again."
            )
        return self._shared.session

    def _reserve_key(self, label: str) -> None:
        """Make room for ``label`` among the keys the session holds (``keys_per_session``).

        When the session already used as many other keys as the profile allows, it is closed
        and reopened with the same PIN, which lets the module unload them; the cached handles
        go with it. Shared by every element on the token, like the session itself.
        """
        self._live_session()
        limit = self._profile.keys_per_session
        shared = self._shared
        if limit is None or label in shared.used:
            return
        if len(shared.used) >= limit:
            with _LOCK:
                old = shared.session
                # Closing is best effort: a session the token already dropped is closed.
                with contextlib.suppress(p11.PKCS11Error):
                    old.close()
                shared.keys.clear()
                shared.used.clear()
                shared.session = _open_session(shared.token, self._config)
        shared.used.add(label)

    # -- object lookup -----------------------------------------------------------------

    def _objects(self, attrs: dict[Attribute, Any], action: str) -> list[Any]:
        try:
            return list(self._live_session().get_objects(attrs))
        except p11.PKCS11Error as exc:
            raise map_pkcs11_error(exc, action) from exc

    def _cache(self) -> dict[str, _KeyObjects]:
        self._live_session()  # a closed element answers nothing, not even from the cache
        return self._shared.keys

    def _forget(self, label: str) -> None:
        self._shared.keys.pop(label, None)

    def _search(self, label: str) -> _KeyObjects | None:
        """Every object labelled ``label``, in one search; None if no private key has it.

        ``TokenNotReadyError`` for duplicate private keys, ``UnsupportedKeyError`` for a key
        that is not P-256. The result is cached for the rest of the session.
        """
        found = self._objects({Attribute.LABEL: label}, f"look up key {label!r}")
        privates = [obj for obj in found if obj.object_class == ObjectClass.PRIVATE_KEY]
        if len(privates) > 1:
            raise TokenNotReadyError(
                f"Token {self.token_label!r} holds {len(privates)} private keys labelled "
                f"{label!r}; Tether needs labels to be unique. Remove the duplicates."
            )
        if not privates:
            return None
        self._require_p256_private(privates[0], label)
        try:
            certificates = [
                obj
                for obj in found
                if obj.object_class == ObjectClass.CERTIFICATE
                and obj[Attribute.CERTIFICATE_TYPE] == CertificateType.X_509
            ]
        except p11.PKCS11Error as exc:
            raise map_pkcs11_error(exc, f"look up the certificate of {label!r}") from exc
        entry = _KeyObjects(
            private=privates[0],
            publics=[obj for obj in found if obj.object_class == ObjectClass.PUBLIC_KEY],
            certificates=certificates,
        )
        if entry.publics:
            # Best effort: public_key() reports a bad public object itself, with its own error.
            with contextlib.suppress(TetherError):
                entry.public_key = self._public_key_from_object(entry.publics[0], label)
        self._shared.keys[label] = entry
        return entry

    def _key(self, label: str) -> _KeyObjects:
        """The objects of the P-256 key under ``label``; ``KeyNotFoundError`` if there is none."""
        validate_label(label)
        entry = self._cache().get(label) or self._search(label)
        if entry is None:
            raise KeyNotFoundError(
                f"No key labelled {label!r} in token {self.token_label!r}. Generate it first "
                "or check the label (see labels())."
            )
        return entry

    def _with_key(self, label: str, use: Callable[[_KeyObjects], _T]) -> _T:
        """``use(objects of label)``, again after a fresh search if a cached handle is stale.

        ``use`` raises python-pkcs11 errors as they are; the caller maps them.
        """
        cached = label in self._shared.keys
        entry = self._key(label)
        try:
            return use(entry)
        except p11.ObjectHandleInvalid:
            if not cached:
                raise
            # Removed by another process since this session found it: look again.
            self._forget(label)
            return use(self._key(label))

    def _key_id(self, label: str) -> bytes:
        def read(entry: _KeyObjects) -> bytes:
            if entry.key_id is None:
                entry.key_id = bytes(entry.private[Attribute.ID])
            return entry.key_id

        try:
            return self._with_key(label, read)
        except p11.PKCS11Error as exc:
            raise map_pkcs11_error(exc, f"read the id of key {label!r}") from exc

    def _require_p256_private(self, key: Any, label: str) -> None:
        try:
            key_type = key[Attribute.KEY_TYPE]
            params = key[Attribute.EC_PARAMS] if key_type == KeyType.EC else None
        except p11.PKCS11Error as exc:
            raise map_pkcs11_error(exc, f"read the attributes of key {label!r}") from exc
        if params != P256_PARAMS:
            raise UnsupportedKeyError(
                f"The key labelled {label!r} in token {self.token_label!r} is not an ECDSA "
                "P-256 key; Tether only uses P-256."
            )

    def _public_key_from_object(self, obj: Any, label: str) -> ec.EllipticCurvePublicKey:
        try:
            der = encode_ec_public_key(obj)
            key = serialization.load_der_public_key(der)
        except (p11.PKCS11Error, ValueError) as exc:
            raise TokenOperationError(
                f"Cannot read the public key labelled {label!r} from token "
                f"{self.token_label!r}: {exc}."
            ) from exc
        return require_p256(key, f"labelled {label!r} in token {self.token_label!r}")

    def _certificate_objects(self, label: str) -> list[Any]:
        return self._objects(
            {
                Attribute.CLASS: ObjectClass.CERTIFICATE,
                Attribute.CERTIFICATE_TYPE: CertificateType.X_509,
                Attribute.LABEL: label,
            },
            f"look up the certificate of {label!r}",
        )

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
        self._shared.keys[label] = _KeyObjects(
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
