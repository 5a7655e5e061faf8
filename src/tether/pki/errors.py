"""The errors ``tether.pki`` raises, each under one of the categories of ``tether.errors``.

Every class has a stable ``code``; the message at the raise site says what to do.
"""

from __future__ import annotations

from tether.errors import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PolicyViolationError,
    StorageError,
)


class MalformedInputError(InvalidInputError):
    """A certificate, CSR or key could not be parsed (bad PEM/DER, truncated, wrong type)."""

    code = "pki_malformed_input"


class InputTooLargeError(InvalidInputError):
    """An input is larger than the documented limit (``MAX_INPUT_BYTES``)."""

    code = "pki_input_too_large"


class BadCsrSignatureError(InvalidInputError):
    """A CSR's self-signature does not verify: no proof of possession of the key."""

    code = "pki_csr_bad_signature"


class InvalidSerialError(PolicyViolationError):
    """A device serial does not match ``^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$``."""

    code = "pki_invalid_serial"


class InvalidNameError(PolicyViolationError):
    """A CA name, service name, DNS name or IP address is not acceptable."""

    code = "pki_invalid_name"


class UnsupportedKeyError(PolicyViolationError):
    """A key is not ECDSA P-256 (RSA, P-384, Ed25519, ...)."""

    code = "pki_unsupported_key"


class SubjectNotAllowedError(PolicyViolationError):
    """A CSR subject holds something other than the device serial as CN (PII, extra attributes)."""

    code = "pki_subject_not_allowed"


class ValidityError(PolicyViolationError):
    """A requested validity is empty, negative or reaches past the issuer's."""

    code = "pki_validity_out_of_range"


class RoleMismatchError(PolicyViolationError):
    """An issuing CA was asked for a certificate its role does not allow."""

    code = "pki_role_mismatch"


class NotATetherCaError(PolicyViolationError):
    """A certificate is not a Tether CA (not a CA, or no ``tether:<role>`` OU)."""

    code = "pki_not_a_tether_ca"


class NotIssuedByThisCaError(PolicyViolationError):
    """A certificate to revoke was not issued by this CA."""

    code = "pki_not_issued_by_ca"


class WeakPassphraseError(PolicyViolationError):
    """A new CA key passphrase is too short."""

    code = "pki_weak_passphrase"


class ChainVerificationError(AuthenticationError):
    """A certificate does not chain to a trusted root under the Tether policy."""

    code = "pki_chain_invalid"


class WrongPassphraseError(AuthenticationError):
    """The passphrase does not decrypt the CA key (or the key file is damaged)."""

    code = "pki_wrong_passphrase"


class SigningError(ConfigurationError):
    """A signer returned a signature that does not verify against its own public key."""

    code = "pki_signer_failed"


class KeyMismatchError(ConfigurationError):
    """A CA certificate and the key offered for it do not belong together."""

    code = "pki_key_mismatch"


class UnknownKeyReferenceError(ConfigurationError):
    """``ca.json`` names a key type this version cannot open."""

    code = "pki_unknown_key_reference"


class CaDirectoryError(ConfigurationError):
    """A CA directory is missing files or its metadata is unreadable."""

    code = "pki_bad_ca_directory"


class CaDirectoryNotFoundError(NotFoundError):
    """The named CA directory does not exist."""

    code = "pki_ca_not_found"


class CaDirectoryExistsError(ConflictError):
    """The target CA directory (or output file) already exists; nothing is overwritten."""

    code = "pki_already_exists"


class AlreadyRevokedError(ConflictError):
    """The certificate is already on this CA's revocation list."""

    code = "pki_already_revoked"


class CaStorageError(StorageError):
    """A CA directory write failed; the previous state is intact."""

    code = "pki_storage_failed"


class InputFileNotFoundError(NotFoundError):
    """A named input file (certificate, CSR) does not exist or cannot be read."""

    code = "pki_input_not_found"


class UnknownReasonError(InvalidInputError):
    """A revocation reason that is not one of the RFC 5280 reason codes Tether accepts."""

    code = "pki_unknown_reason"
