"""Loading a PKCS#11 library and finding a token in it, once per process.

Three PKCS#11 facts shape this module:

* A module is loaded and ``C_Initialize``\\ d once per process: the loaded libraries are kept
  here for the life of the process.
* Many modules (SoftHSM2 among them) read their slot list at ``C_Initialize``: a token
  initialised later is invisible until the module is re-initialised. When a token is not
  found and this process holds no session on that module, the module is re-initialised
  once and the lookup retried. Re-initialising ends every session on the module in the
  process, including ones opened by other libraries through python-pkcs11.
* Another library (awscrt) may have initialised the module first; python-pkcs11 cannot
  load it then, so the module is "borrowed" (see ``_borrow_initialised_module``) and never
  re-initialised by Tether.

Callers hold ``session.LOCK`` around these functions (see ``session.acquire_session``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pkcs11
import pkcs11.exceptions as p11
from pkcs11 import _pkcs11  # the extension type itself, see _borrow_initialised_module

from tether.secure_element.errors import (
    Pkcs11ModuleError,
    TokenNotFoundError,
    TokenNotReadyError,
    map_pkcs11_error,
)
from tether.secure_element.profiles import TokenProfile, profile_for_module


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


# Process-wide: see the module docstring.
_LIBS: dict[str, Any] = {}
_BORROWED: set[str] = set()  # modules C_Initialize'd by another library in this process


def load_module(module: str, profile: TokenProfile) -> Any:
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


def find_token(lib: Any, module: str, token_label: str, *, in_use: bool) -> Any:
    """The token labelled ``token_label``; ``in_use``: this process holds a session on ``module``.

    A token that is not found is looked up once more after re-initialising the module, unless
    the module is in use or borrowed (see the module docstring).
    """
    for attempt in range(2):
        try:
            return lib.get_token(token_label=token_label)
        except p11.NoSuchToken as exc:
            if attempt == 0 and not in_use and module not in _BORROWED:
                # Pick up tokens initialised since C_Initialize (see module docstring).
                try:
                    lib.reinitialize()
                except p11.PKCS11Error as reinit_exc:
                    raise map_pkcs11_error(reinit_exc, "rescan the token slots") from reinit_exc
                continue
            hint = (
                " (the module is in use in this process, so tokens initialised since it was "
                "loaded may not be visible until it is released or the process restarts)"
                if in_use or module in _BORROWED
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
