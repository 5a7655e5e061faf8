"""Certificate signing requests assembled around a signature made elsewhere (a token).

``cryptography``'s CSR builder signs only with its own key objects, so the request is built
with asn1crypto: the CertificationRequestInfo (subject CN=serial, the key's
SubjectPublicKeyInfo, no attributes) is DER-encoded, handed to a ``Signer`` (which may sign
inside a secure element), and wrapped with the signature as ecdsa-with-SHA256. The result
is parsed and its signature checked by ``cryptography`` before it is returned.
"""

from __future__ import annotations

from asn1crypto import algos, keys
from asn1crypto import csr as asn1_csr
from asn1crypto import x509 as asn1_x509
from cryptography import x509

from tether.pki import validate_serial
from tether.pki.signer import Signer
from tether.secure_element.base import require_p256, spki_der
from tether.secure_element.errors import TokenOperationError


def build_csr(signer: Signer, serial: str) -> x509.CertificateSigningRequest:
    """A PKCS#10 request for ``signer``'s P-256 key with subject CN=``serial``, signed by it.

    Works with any ``Signer`` (a token's, an emulator's, ``SoftwareSigner``). Raises
    ``tether.pki``'s ``InvalidSerialError`` (``pki_invalid_serial``, the one serial syntax of
    the project) for a bad serial, ``UnsupportedKeyError`` for a non-P-256 key and
    ``TokenOperationError`` if the signature does not verify with the signer's public key
    (a signer whose key and signature disagree).
    """
    validate_serial(serial)
    public_key = require_p256(signer.public_key(), "of this signer")
    info = asn1_csr.CertificationRequestInfo(
        {
            "version": "v1",
            "subject": asn1_x509.Name.build({"common_name": serial}),
            "subject_pk_info": keys.PublicKeyInfo.load(spki_der(public_key)),
            "attributes": asn1_csr.CRIAttributes([]),
        }
    )
    signature = signer.sign(info.dump())
    request = asn1_csr.CertificationRequest(
        {
            "certification_request_info": info,
            "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"}),
            "signature": signature,
        }
    )
    try:
        csr = x509.load_der_x509_csr(request.dump())
        valid = csr.is_signature_valid
    except ValueError as exc:
        raise TokenOperationError(
            f"The signer returned a malformed signature for the CSR of {serial!r} ({exc})."
        ) from exc
    if not valid:
        raise TokenOperationError(
            f"The CSR signature for {serial!r} does not verify with the signer's public key: the "
            "signer's key and its signatures disagree. Check the key label and the token."
        )
    return csr
