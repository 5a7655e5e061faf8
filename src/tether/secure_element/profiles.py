"""What differs between PKCS#11 tokens, in one place: one ``TokenProfile`` per module kind.

The backend (``tether.secure_element.pkcs11``) is the same for every token; what a token
insists on is data here, chosen from the module's file name (``profile_for_module``) or given
explicitly in ``Pkcs11Config.profile``. Three profiles exist:

* ``SOFTHSM2`` and ``GENERIC`` (any other vendor module): the strict template. The private
  key is a token object, private, CKA_SENSITIVE, not CKA_EXTRACTABLE and sign-only (no
  decrypt, unwrap, derive or sign-recover); the public key verifies only.
* ``TPM2`` (tpm2-pkcs11, e.g. on a Linux gateway's TPM 2.0, or swtpm in tests). tpm2-pkcs11
  1.9 derives an EC key's PKCS#11 usage flags from the TPM object it creates, which is a
  sign *and* decrypt key, and refuses (CKR_GENERAL_ERROR, "User specified and TPM specified
  attr mismatch") any template that disagrees: the private key must say SIGN, VERIFY and
  DECRYPT true, the public key VERIFY and ENCRYPT true. So a TPM key carries CKA_DECRYPT
  true. What that does not change: the key is still CKA_SENSITIVE, not CKA_EXTRACTABLE,
  CKA_VALUE is refused, and the module offers no EC decryption or key-derivation mechanism
  (the key's CKA_ALLOWED_MECHANISMS are the ECDSA family only; DERIVE stays false). Invariant
  2 (the key cannot be read out) holds; "sign-only" is, on a TPM, "ECDSA-only by mechanism".

  The TPM holds only a few loaded objects at a time, and tpm2-pkcs11 keeps every key a
  session has created or used loaded until the session closes: past the resource manager's
  per-client budget (tpm2-abrmd: 27 transient objects by default, about a dozen key pairs)
  it fails with TPM_RC_OBJECT_MEMORY (0x902), which the module reports as CKR_GENERAL_ERROR.
  ``keys_per_session`` makes the backend close and reopen its session after that many keys,
  which lets the module unload them; a factory line keeps one element open for many units.
  tpm2-pkcs11 also reports a TPM it cannot reach (no resource manager, a stopped swtpm, a
  wrong ``TPM2_PKCS11_TCTI``) as CKR_GENERAL_ERROR from C_Initialize: ``unreachable_hint``
  says what to check.

Both tokens offer raw CKM_ECDSA (SoftHSM 2.6 has no CKM_ECDSA_SHA256; the TPM has both), and
``sign_digest`` signs a host-computed SHA-256 digest, so the mechanism is not a profile field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pkcs11 import Attribute, MechanismFlag
from pkcs11.util.ec import encode_named_curve_parameters

P256_PARAMS = encode_named_curve_parameters("secp256r1")

# What every profile's private key must be, whatever else the token forces: invariant 2.
REQUIRED_PRIVATE = MappingProxyType(
    {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
    }
)


@dataclass(frozen=True, slots=True)
class TokenProfile:
    """How Tether talks to one kind of PKCS#11 module: templates, limits, hints.

    ``module_prefixes`` are the file-name prefixes (after resolving symlinks) it is chosen
    for. ``public_template`` and ``private_template`` are the key-generation templates (on
    top of CKA_TOKEN and CKA_LABEL); each private template contains ``REQUIRED_PRIVATE``.
    ``keys_per_session`` (None: no limit) is how many keys one login session may create or
    use before the backend reopens it. ``unreachable_hint`` is added to the error when the
    module loads but cannot initialise (a TPM that is not running); ``keygen_failure_hint``
    to the error when generation fails with CKR_GENERAL_ERROR, which is a ``TokenFullError``
    when ``full_reported_as_general_error`` (the module's way of saying "no room").
    """

    name: str
    module_prefixes: tuple[str, ...]
    public_template: Mapping[Attribute, Any]
    private_template: Mapping[Attribute, Any]
    keys_per_session: int | None = None
    unreachable_hint: str = ""
    keygen_failure_hint: str = ""
    full_reported_as_general_error: bool = False
    capabilities: MechanismFlag = MechanismFlag.SIGN | MechanismFlag.VERIFY

    def __post_init__(self) -> None:
        for attribute, value in REQUIRED_PRIVATE.items():
            if attribute is Attribute.TOKEN:
                continue  # set by generate_keypair(store=True)
            if self.private_template.get(attribute) is not value:
                raise ValueError(f"profile {self.name}: private key needs {attribute.name}={value}")

    @property
    def forced_private_usages(self) -> tuple[str, ...]:
        """Usage flags the token sets on the private key beyond SIGN (e.g. DECRYPT on a TPM)."""
        extra = (Attribute.DECRYPT, Attribute.VERIFY, Attribute.SIGN_RECOVER)
        return tuple(a.name for a in extra if self.private_template.get(a) is True)


_STRICT_PUBLIC = MappingProxyType(
    {
        Attribute.EC_PARAMS: P256_PARAMS,
        Attribute.PRIVATE: False,
        Attribute.DERIVE: False,
    }
)
_STRICT_PRIVATE = MappingProxyType(
    {
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.SIGN_RECOVER: False,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
    }
)

SOFTHSM2 = TokenProfile(
    name="softhsm2",
    module_prefixes=("libsofthsm2",),
    public_template=_STRICT_PUBLIC,
    private_template=_STRICT_PRIVATE,
)

GENERIC = TokenProfile(
    name="generic",
    module_prefixes=(),
    public_template=_STRICT_PUBLIC,
    private_template=_STRICT_PRIVATE,
    keygen_failure_hint=(
        " If the token refuses Tether's strict sign-only template, it may need a profile of "
        "its own (see tether.secure_element.profiles)."
    ),
)

TPM2 = TokenProfile(
    name="tpm2",
    module_prefixes=("libtpm2_pkcs11",),
    public_template=MappingProxyType(
        {**_STRICT_PUBLIC, Attribute.VERIFY: True, Attribute.ENCRYPT: True}
    ),
    private_template=MappingProxyType(
        {**_STRICT_PRIVATE, Attribute.VERIFY: True, Attribute.DECRYPT: True}
    ),
    # tpm2-abrmd's default budget is 27 transient objects per client; a key pair takes two,
    # and the token's primary and seal objects take some. Ten keys leave room.
    keys_per_session=10,
    full_reported_as_general_error=True,
    unreachable_hint=(
        " tpm2-pkcs11 could not reach the TPM: check that the TPM (or swtpm) is running, that "
        "a resource manager serves it (tpm2-abrmd, or the kernel's /dev/tpmrm0), and "
        "TPM2_PKCS11_TCTI (e.g. tabrmd:bus_type=system or device:/dev/tpmrm0) and "
        "TPM2_PKCS11_STORE (the directory made with `tpm2_ptool init`)."
    ),
    keygen_failure_hint=(
        " On a TPM this is most often TPM_RC_OBJECT_MEMORY (0x902): the TPM or its resource "
        "manager has no free object slots. Run tpm2-abrmd or use /dev/tpmrm0, and close other "
        "sessions on the TPM; TPM2_PKCS11_LOG_LEVEL=2 shows the TPM's own error."
    ),
)

PROFILES: Mapping[str, TokenProfile] = MappingProxyType(
    {profile.name: profile for profile in (SOFTHSM2, TPM2, GENERIC)}
)


def profile_for_module(module: str) -> TokenProfile:
    """The profile for the PKCS#11 library at ``module``, by its file name; ``GENERIC`` if unknown.

    Symlinks are resolved first (Debian's ``pkcs11/libtpm2_pkcs11.so`` points at
    ``libtpm2_pkcs11.so.1``), so any path to the same library picks the same profile.
    """
    names = {os.path.basename(module), os.path.basename(os.path.realpath(module))}
    for profile in (SOFTHSM2, TPM2):
        if any(name.startswith(profile.module_prefixes) for name in names):
            return profile
    return GENERIC
