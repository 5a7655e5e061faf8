"""Proof that whoever registers a CA holds its key: a verification certificate.

The cloud hands out a registration code (random, single use, short-lived). The CA owner
signs, with the CA key, a short-lived leaf whose subject is exactly ``CN=<code>``
(``tether ca verification-cert``); the cloud registers the CA only if that leaf verifies
under the CA certificate and carries the code it handed out. The leaf's own key is thrown
away at once: what proves possession is the CA's signature, not the leaf key. The leaf is
CA:FALSE with no extended key usage, so it is good for nothing but this check.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import NameOID

from tether.errors import InvalidInputError, PolicyViolationError
from tether.pki.authority import CLOCK_SKEW
from tether.pki.keys import generate_key
from tether.pki.names import validate_serial
from tether.pki.signer import Signer
from tether.pki.signing import sign_certificate

DEFAULT_VALIDITY = timedelta(hours=1)
MAX_VALIDITY = timedelta(days=1)


class VerificationCertificateError(PolicyViolationError):
    """A verification certificate does not prove possession of the CA key for this code."""

    code = "verification_certificate_invalid"


def issue_verification_certificate(
    ca_certificate: x509.Certificate,
    signer: Signer,
    code: str,
    *,
    validity: timedelta = DEFAULT_VALIDITY,
) -> x509.Certificate:
    """A leaf CN=``code`` signed by the CA key behind ``signer`` (any CA, any role).

    ``code`` is checked like a serial (it is a CN); ``validity`` is at most one day and must
    end inside the CA's own validity.
    """
    code = validate_serial(code)
    if not timedelta(0) < validity <= MAX_VALIDITY:
        raise InvalidInputError(
            "a verification certificate lives more than 0 and at most 1 day; it is "
            "used once, right away",
            code="verification_validity_out_of_range",
        )
    now = datetime.now(UTC)
    not_after = min(now + validity, ca_certificate.not_valid_after_utc)
    if not_after <= now:
        raise InvalidInputError(
            "the CA certificate has expired; it cannot prove anything",
            code="verification_ca_expired",
        )
    key = generate_key()  # never stored: the CA signature is the proof
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, code)]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - CLOCK_SKEW, ca_certificate.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    return sign_certificate(builder, signer)


def check_verification_certificate(
    ca_certificate: x509.Certificate,
    verification: x509.Certificate,
    code: str,
    *,
    now: datetime | None = None,
) -> None:
    """Raise VerificationCertificateError unless ``verification`` proves the CA key for ``code``.

    It must be signed by ``ca_certificate``'s key, name it as issuer, have subject exactly
    ``CN=<code>`` and be within its validity at ``now``.
    """
    now = now or datetime.now(UTC)
    try:
        verification.verify_directly_issued_by(ca_certificate)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        raise VerificationCertificateError(
            "the verification certificate was not signed by this CA's key; sign it with "
            "`tether ca verification-cert --ca <the CA directory> --code <code>`"
        ) from None
    cns = verification.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(verification.subject) != 1 or len(cns) != 1 or cns[0].value != code:
        raise VerificationCertificateError(
            "the verification certificate's subject is not exactly CN=<the registration "
            "code>; make it again with the code the cloud gave you"
        )
    if not verification.not_valid_before_utc <= now <= verification.not_valid_after_utc:
        raise VerificationCertificateError(
            "the verification certificate is not valid now (expired or not yet valid); "
            "make a fresh one"
        )
