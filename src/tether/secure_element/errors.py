"""Errors of the secure element layer, each under one of the ``tether.errors`` categories.

Every class carries a stable ``code``; the message (given where raised) says what to do.
``map_pkcs11_error`` turns a python-pkcs11 exception into one of these, so that no raw
``PKCS11Error`` escapes the package.
"""

from __future__ import annotations

import pkcs11.exceptions as p11

from tether.errors import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PolicyViolationError,
    SecureElementError,
    StorageError,
    TetherError,
)


class WrongPinError(AuthenticationError):
    """The token refused the user PIN."""

    code = "se_wrong_pin"


class PinLockedError(AuthenticationError):
    """The user PIN is locked (too many wrong tries) or expired; the SO must reset it."""

    code = "se_pin_locked"


class EmulatorWrongPassphraseError(AuthenticationError):
    """The passphrase does not open the emulated secure element."""

    code = "se_emulator_wrong_passphrase"


class TokenNotFoundError(NotFoundError):
    """No token with the requested label is present in the module's slots."""

    code = "se_token_not_found"


class KeyNotFoundError(NotFoundError):
    """No key with the requested label exists in the secure element."""

    code = "se_key_not_found"


class Pkcs11ModuleError(ConfigurationError):
    """The PKCS#11 module (shared library) is missing or cannot be loaded."""

    code = "se_module_not_found"


class TokenNotReadyError(ConfigurationError):
    """The token is present but not usable: not initialised, user PIN never set, ambiguous."""

    code = "se_token_not_ready"


class EmulatorStoreError(StorageError):
    """The emulator's directory or one of its files is unreadable, unwritable or corrupt."""

    code = "se_emulator_store"


class LabelInUseError(ConflictError):
    """An object with this label already exists; pick another label or delete the old key."""

    code = "se_label_in_use"


class TokenFullError(SecureElementError):
    """The token has no room (or the host no memory) for another object."""

    code = "se_token_full"


class ElementClosedError(SecureElementError):
    """The secure element was closed; open it again before using it."""

    code = "se_closed"


class TokenOperationError(SecureElementError):
    """The token refused or failed an operation for a reason not mapped more precisely."""

    code = "se_operation_failed"


class InvalidLabelError(InvalidInputError):
    """A key label outside the allowed alphabet or length."""

    code = "se_invalid_label"


class InvalidDigestError(InvalidInputError):
    """``sign_digest`` was given something other than a 32-byte SHA-256 digest."""

    code = "se_invalid_digest"


class CertificateMismatchError(InvalidInputError):
    """A certificate whose public key is not the public half of the stored key."""

    code = "se_certificate_mismatch"


class UnsupportedKeyError(PolicyViolationError):
    """The object under this label is not an ECDSA P-256 key, the only kind Tether uses."""

    code = "se_unsupported_key"


def map_pkcs11_error(exc: p11.PKCS11Error, action: str) -> TetherError:
    """Translate a python-pkcs11 exception raised while doing ``action`` into a ``TetherError``.

    The result is meant to be raised ``from exc``. Codes the caller can act on get their own
    class (full token, wrong or locked PIN); everything else becomes ``TokenOperationError``
    naming the PKCS#11 error, so an operator can look it up in the vendor's documentation.
    """
    name = type(exc).__name__
    if isinstance(exc, p11.DeviceMemory | p11.HostMemory):
        return TokenFullError(
            f"Cannot {action}: the token (or the host) is out of memory ({name}). "
            "Delete unused objects from the token or use a token with more room."
        )
    if isinstance(exc, p11.PinIncorrect | p11.PinInvalid | p11.PinLenRange):
        return WrongPinError(
            f"Cannot {action}: the token refused the PIN. Check the PIN; repeated wrong "
            "PINs lock the token."
        )
    if isinstance(exc, p11.PinLocked | p11.PinExpired):
        return PinLockedError(
            f"Cannot {action}: the user PIN is locked or expired ({name}). The security "
            "officer must reset it (e.g. softhsm2-util / pkcs11-tool --init-pin)."
        )
    if isinstance(exc, p11.UserPinNotInitialized | p11.TokenNotRecognised):
        return TokenNotReadyError(
            f"Cannot {action}: the token is not initialised for use ({name}). Initialise it "
            "and set a user PIN first."
        )
    if isinstance(exc, p11.TokenNotPresent | p11.DeviceRemoved):
        return TokenNotFoundError(
            f"Cannot {action}: the token was removed ({name}). Reconnect it and try again."
        )
    return TokenOperationError(
        f"Cannot {action}: the token reported {name}. See the token vendor's documentation "
        "for this PKCS#11 error."
    )
