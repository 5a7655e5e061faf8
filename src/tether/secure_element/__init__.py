"""Keys that sign but never leave: PKCS#11 tokens, a software emulator, and CSRs around them.

``SecureElement`` is the interface; ``Pkcs11SecureElement`` keeps keys in a token,
``EmulatedSecureElement`` in encrypted files (and says so). ``build_csr`` makes a PKCS#10
request from any ``tether.pki.signer.Signer``.
"""

from __future__ import annotations

from tether.secure_element.base import (
    KeyProtection,
    SecureElement,
    SecureElementSigner,
    validate_digest,
    validate_label,
)
from tether.secure_element.csr import build_csr
from tether.secure_element.emulator import EMULATOR_LOGGER, EmulatedSecureElement
from tether.secure_element.pkcs11 import Pkcs11Config, Pkcs11SecureElement

__all__ = [
    "EMULATOR_LOGGER",
    "EmulatedSecureElement",
    "KeyProtection",
    "Pkcs11Config",
    "Pkcs11SecureElement",
    "SecureElement",
    "SecureElementSigner",
    "build_csr",
    "validate_digest",
    "validate_label",
]
