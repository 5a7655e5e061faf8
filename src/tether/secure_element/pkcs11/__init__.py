"""Secure element backed by a PKCS#11 token (SoftHSM2 in development, a TPM, vendor modules).

One module per job: ``module`` loads the PKCS#11 library once per process and finds the
token; ``session`` shares one login session per token and keeps the handles of the key
objects found through it; ``objects`` turns a label into those objects; ``element`` is the
``Pkcs11SecureElement`` itself. What differs between tokens (key templates, how many keys a
session may hold, what an initialisation failure means) is a ``TokenProfile`` (see
``tether.secure_element.profiles``), chosen from the module's file name or given in
``Pkcs11Config``: this package has no token-specific branches.
"""

from __future__ import annotations

from tether.secure_element.pkcs11.element import Pkcs11SecureElement
from tether.secure_element.pkcs11.module import Pkcs11Config

__all__ = ["Pkcs11Config", "Pkcs11SecureElement"]
