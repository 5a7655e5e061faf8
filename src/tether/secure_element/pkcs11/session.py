"""Login sessions shared per token, and the handles of the key objects found through them.

* Login state is per application and token: ``C_Logout`` on one session logs out every
  session on that token. So sessions are shared per (module, slot) with a reference count;
  a second ``open`` of the same token checks the PIN against the one that opened it.
* SoftHSM's file object store reads every object in the token on each object search, so a
  search gets slower as the token fills (a factory line keeps thousands of keys in one
  token). The handles of objects found or made are therefore kept per shared session (see
  ``KeyObjects``): a factory unit costs one search, the "is the label free?" check. The
  cache assumes this process is the only one changing the labels it works on while it holds
  the session; an object another process removed is noticed when the token calls its handle
  invalid, and looked up afresh once (see ``objects.TokenObjects``).
* Some modules keep every key a session used loaded in the device (tpm2-pkcs11 on a TPM,
  whose object slots are few). A profile with ``keys_per_session`` makes the shared session
  close and reopen (same PIN) before it would hold more keys than that (``reopen_session``);
  the handle cache is dropped with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
from dataclasses import dataclass, field
from typing import Any

import pkcs11.exceptions as p11
from cryptography.hazmat.primitives.asymmetric import ec

from tether.secure_element.errors import WrongPinError, map_pkcs11_error
from tether.secure_element.pkcs11.module import Pkcs11Config, find_token, load_module

SessionKey = tuple[str, int]  # (module path, slot id)


@dataclass
class KeyObjects:
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
class SharedSession:
    session: Any  # pkcs11.Session; python-pkcs11's own class is untyped at runtime
    token: Any  # pkcs11.Token, to reopen the session (see ``reopen_session``)
    pin_digest: bytes
    users: int
    # Label -> objects found or made through this session (see the module docstring). Shared
    # by every element on the token, so a delete through one is seen by the others; dropped
    # with the session, so handles never outlive the login they were found under.
    keys: dict[str, KeyObjects] = field(default_factory=dict)
    # Labels whose keys this session generated or signed with: what a module such as
    # tpm2-pkcs11 keeps loaded until the session closes (see TokenProfile.keys_per_session).
    used: set[str] = field(default_factory=set)


# Process-wide PKCS#11 state: see the module docstring for why sessions are shared.


# Process-wide PKCS#11 state: see the module docstring for why sessions are shared.
LOCK = threading.RLock()
_SESSIONS: dict[SessionKey, SharedSession] = {}


def _pin_digest(pin: str) -> bytes:
    return hashlib.sha256(pin.encode("utf-8")).digest()


def _module_in_use(module: str) -> bool:
    return any(key[0] == module for key in _SESSIONS)


def open_session(token: Any, config: Pkcs11Config) -> Any:
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


def acquire_session(config: Pkcs11Config) -> tuple[SessionKey, SharedSession]:
    with LOCK:
        lib = load_module(config.module, config.token_profile)
        token = find_token(
            lib, config.module, config.token_label, in_use=_module_in_use(config.module)
        )
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
        session = open_session(token, config)
        shared = SharedSession(session, token, _pin_digest(config.pin), 1)
        _SESSIONS[key] = shared
        return key, shared


def release_session(key: SessionKey) -> None:
    with LOCK:
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


def reopen_session(shared: SharedSession, config: Pkcs11Config) -> None:
    """Close ``shared``'s session and log in again, dropping its handles and used keys.

    What lets a module such as tpm2-pkcs11 unload the keys the session used (see
    ``TokenProfile.keys_per_session``); every element on the token sees the new session.
    """
    with LOCK:
        old = shared.session
        # Closing is best effort: a session the token already dropped is closed.
        with contextlib.suppress(p11.PKCS11Error):
            old.close()
        shared.keys.clear()
        shared.used.clear()
        shared.session = open_session(shared.token, config)
