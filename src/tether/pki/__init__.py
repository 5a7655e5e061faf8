"""The Tether PKI: an offline root, issuing CAs by role, strict device certificates, lint.

Import from here; the submodules are ``names`` (serials, roles), ``keys``, ``loading``
(size-limited PEM/DER intake), ``signing`` (any ``Signer``), ``authority`` (profiles and
issuance), ``verify`` (path validation), ``lint`` and ``store`` (CA directories on disk).
"""

from tether.pki.authority import IssuingCA, RevokedEntry, RootCA
from tether.pki.keys import generate_key
from tether.pki.lint import Finding, lint
from tether.pki.loading import (
    MAX_INPUT_BYTES,
    load_certificate,
    load_certificates,
    load_csr,
    sha256_fingerprint,
)
from tether.pki.names import (
    Role,
    device_serial_of,
    role_of,
    validate_serial,
    validate_service_name,
)
from tether.pki.signer import Signer, SoftwareSigner
from tether.pki.signing import sign_certificate, sign_crl
from tether.pki.verify import verify_chain, verify_server_chain

__all__ = [
    "MAX_INPUT_BYTES",
    "Finding",
    "IssuingCA",
    "RevokedEntry",
    "Role",
    "RootCA",
    "Signer",
    "SoftwareSigner",
    "device_serial_of",
    "generate_key",
    "lint",
    "load_certificate",
    "load_certificates",
    "load_csr",
    "role_of",
    "sha256_fingerprint",
    "sign_certificate",
    "sign_crl",
    "validate_serial",
    "validate_service_name",
    "verify_chain",
    "verify_server_chain",
]
