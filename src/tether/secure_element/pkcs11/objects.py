"""Finding a key's objects in the token, through the shared session's handle cache.

``TokenObjects`` is the half of ``Pkcs11SecureElement`` that turns a label into token
objects: one search per label, its handles kept in the shared session (see ``session``), a
stale handle (the object was removed by another process) looked up afresh once. Every
search goes through ``_objects``, the one place that asks the token. The element adds the
``SecureElement`` operations on top (see ``element``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import pkcs11.exceptions as p11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, CertificateType, KeyType, ObjectClass
from pkcs11.util.ec import encode_ec_public_key

from tether.errors import TetherError
from tether.secure_element.base import require_p256, validate_label
from tether.secure_element.errors import (
    ElementClosedError,
    KeyNotFoundError,
    TokenNotReadyError,
    TokenOperationError,
    UnsupportedKeyError,
    map_pkcs11_error,
)
from tether.secure_element.pkcs11.module import Pkcs11Config
from tether.secure_element.pkcs11.session import (
    KeyObjects,
    SessionKey,
    SharedSession,
    reopen_session,
)
from tether.secure_element.profiles import P256_PARAMS

_T = TypeVar("_T")


class TokenObjects:
    """The objects under a label in one logged-in token; base of ``Pkcs11SecureElement``."""

    def __init__(
        self, config: Pkcs11Config, session_key: SessionKey, shared: SharedSession
    ) -> None:
        """Internal: use ``Pkcs11SecureElement.open`` or ``from_config``."""
        self._config = config
        self._profile = config.token_profile
        self._session_key = session_key
        self._shared = shared
        self._closed = False

    @property
    def token_label(self) -> str:
        """The label of the token this element is logged in to."""
        return self._config.token_label

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
            reopen_session(shared, self._config)
        shared.used.add(label)

    # -- object lookup -----------------------------------------------------------------

    def _objects(self, attrs: dict[Attribute, Any], action: str) -> list[Any]:
        try:
            return list(self._live_session().get_objects(attrs))
        except p11.PKCS11Error as exc:
            raise map_pkcs11_error(exc, action) from exc

    def _cache(self) -> dict[str, KeyObjects]:
        self._live_session()  # a closed element answers nothing, not even from the cache
        return self._shared.keys

    def _forget(self, label: str) -> None:
        self._shared.keys.pop(label, None)

    def _search(self, label: str) -> KeyObjects | None:
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
        entry = KeyObjects(
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

    def _key(self, label: str) -> KeyObjects:
        """The objects of the P-256 key under ``label``; ``KeyNotFoundError`` if there is none."""
        validate_label(label)
        entry = self._cache().get(label) or self._search(label)
        if entry is None:
            raise KeyNotFoundError(
                f"No key labelled {label!r} in token {self.token_label!r}. Generate it first "
                "or check the label (see labels())."
            )
        return entry

    def _with_key(self, label: str, use: Callable[[KeyObjects], _T]) -> _T:
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
        def read(entry: KeyObjects) -> bytes:
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
