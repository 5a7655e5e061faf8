"""Sign certificates and CRLs with any ``Signer``, including keys that only sign.

``cryptography`` signs only with its own key objects. For a ``SoftwareSigner`` its fast path
is used. For any other signer (a PKCS#11 token, a secure element) the to-be-signed structure
is built by ``cryptography`` with a throwaway P-256 key (so the TBS already names
ecdsa-with-SHA256), its bytes are signed by the signer, the DER is assembled with
``asn1crypto`` and loaded back, and the signature is verified against
``signer.public_key()`` before anything is returned. Callers must set the AKI explicitly
from the issuer's real key (``cryptography`` would not derive it from the throwaway key
anyway: it is never added implicitly).
"""

from __future__ import annotations

from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from tether.pki.errors import SigningError
from tether.pki.signer import Signer, SoftwareSigner

_ECDSA_SHA256 = {"algorithm": "sha256_ecdsa"}


def _check(signer: Signer, signature: bytes, tbs: bytes, what: str) -> None:
    try:
        signer.public_key().verify(signature, tbs, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SigningError(
            f"the signer produced a {what} signature that does not verify against its own "
            "public key; check that the signing key matches the CA certificate"
        ) from None


def sign_certificate(builder: x509.CertificateBuilder, signer: Signer) -> x509.Certificate:
    """Sign ``builder`` with ``signer`` (ECDSA with SHA-256) and return the certificate.

    The result's signature is checked against ``signer.public_key()``; a mismatch raises
    ``SigningError`` and nothing is returned.
    """
    if isinstance(signer, SoftwareSigner):
        cert = builder.sign(signer.private_key, hashes.SHA256())
    else:
        draft = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        tbs = draft.tbs_certificate_bytes
        signature = signer.sign(tbs)
        der = asn1_x509.Certificate(
            {
                "tbs_certificate": asn1_x509.TbsCertificate.load(tbs),
                "signature_algorithm": _ECDSA_SHA256,
                "signature_value": signature,
            }
        ).dump()
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise SigningError(f"the signed certificate could not be assembled: {exc}") from None
        if cert.tbs_certificate_bytes != tbs:
            raise SigningError("the certificate body changed while it was assembled")
    _check(signer, cert.signature, cert.tbs_certificate_bytes, "certificate")
    return cert


def sign_crl(
    builder: x509.CertificateRevocationListBuilder, signer: Signer
) -> x509.CertificateRevocationList:
    """Sign a CRL ``builder`` with ``signer``; same contract as ``sign_certificate``."""
    if isinstance(signer, SoftwareSigner):
        crl = builder.sign(signer.private_key, hashes.SHA256())
    else:
        draft = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        tbs = draft.tbs_certlist_bytes
        signature = signer.sign(tbs)
        der = asn1_crl.CertificateList(
            {
                "tbs_cert_list": asn1_crl.TbsCertList.load(tbs),
                "signature_algorithm": _ECDSA_SHA256,
                "signature": signature,
            }
        ).dump()
        try:
            crl = x509.load_der_x509_crl(der)
        except ValueError as exc:
            raise SigningError(f"the signed CRL could not be assembled: {exc}") from None
        if crl.tbs_certlist_bytes != tbs:
            raise SigningError("the CRL body changed while it was assembled")
    _check(signer, crl.signature, crl.tbs_certlist_bytes, "CRL")
    return crl


def der(cert: x509.Certificate) -> bytes:
    """DER bytes of ``cert``."""
    return cert.public_bytes(Encoding.DER)
