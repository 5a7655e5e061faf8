"""An OCSP responder (RFC 6960) for the issuing CA whose key the cloud holds.

The cloud signs answers only for its online CA (``api.device_ca``): the responder is that CA
itself (no delegated responder certificate), so a relying party that trusts the CA trusts its
answers. For a certificate of that CA the answer is the registry's: ``good`` when registered
and not revoked, ``revoked`` with the time and reason when revoked. A serial number the
registry does not know under that CA is answered ``unauthorized`` (RFC 5019 2.2.3): the
responder does not vouch for what it never recorded, and ``cryptography``'s builder needs the
certificate itself for a ``good``/``unknown`` answer. A request for any other issuer is
answered ``unauthorized`` too. Malformed requests get ``malformedRequest``. Answers are valid
for ``validity`` (``thisUpdate`` now, ``nextUpdate`` then): a client caches them that long.

Requests carry no nonce requirement: a nonce, if sent, is echoed, so a client that asks for
replay protection gets it. Each answer costs one registry read and one ECDSA signature.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from tether.cloud.registry import CertState, Registry
from tether.errors import ConfigurationError
from tether.pki import IssuingCA, sha256_fingerprint
from tether.pki.signer import SoftwareSigner

OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"
MAX_REQUEST_BYTES = 4096  # a request for one certificate is ~100 bytes
DEFAULT_VALIDITY = timedelta(hours=1)


class OcspResponder:
    """Signs OCSP answers for ``ca`` from ``registry``."""

    def __init__(
        self, registry: Registry, ca: IssuingCA, *, validity: timedelta = DEFAULT_VALIDITY
    ) -> None:
        if not isinstance(ca.signer, SoftwareSigner):
            # cryptography's OCSP builder signs with its own key objects only.
            raise ConfigurationError(
                "the OCSP responder needs the online CA's key in memory (a CA directory key)",
                code="ocsp_signer_unsupported",
            )
        self.registry = registry
        self.ca = ca
        self.validity = validity
        self._key: ec.EllipticCurvePrivateKey = ca.signer.private_key
        self._fingerprint = sha256_fingerprint(ca.certificate)
        self._name_der = ca.certificate.subject.public_bytes()
        # issuerKeyHash hashes the subjectPublicKey BIT STRING: for EC, the encoded point.
        self._key_der = ca.signer.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def respond(self, request_der: bytes) -> bytes:
        """The DER OCSP response to a DER request (never raises for bad input)."""
        if len(request_der) > MAX_REQUEST_BYTES:
            return _status(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        try:
            request = ocsp.load_der_ocsp_request(request_der)
            algorithm = request.hash_algorithm
            issuer_name_hash, issuer_key_hash = request.issuer_name_hash, request.issuer_key_hash
            serial = request.serial_number
        except (ValueError, TypeError):
            return _status(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        if not self._is_issuer(algorithm, issuer_name_hash, issuer_key_hash):
            return _status(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        found = self.registry.list_certificates(
            issuer_fingerprint=self._fingerprint, serial_number=format(serial, "x"), limit=1
        ).items
        if not found:
            return _status(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        record = found[0]
        certificate = x509.load_pem_x509_certificate(record.pem.encode())
        now = datetime.now(UTC).replace(microsecond=0)
        revoked = record.state is CertState.REVOKED
        builder = ocsp.OCSPResponseBuilder().add_response(
            cert=certificate,
            issuer=self.ca.certificate,
            algorithm=algorithm,
            cert_status=ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD,
            this_update=now,
            next_update=now + self.validity,
            revocation_time=(record.revoked_at or now) if revoked else None,
            revocation_reason=record.revocation_reason if revoked else None,
        )
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, self.ca.certificate)
        builder = builder.certificates([self.ca.certificate])
        try:
            nonce = request.extensions.get_extension_for_class(x509.OCSPNonce)
            builder = builder.add_extension(nonce.value, critical=False)
        except x509.ExtensionNotFound:
            pass
        response = builder.sign(self._key, hashes.SHA256())
        return response.public_bytes(serialization.Encoding.DER)

    def _is_issuer(
        self, algorithm: hashes.HashAlgorithm, name_hash: bytes, key_hash: bytes
    ) -> bool:
        if not isinstance(algorithm, (hashes.SHA1, hashes.SHA256)):
            return False
        return name_hash == _digest(algorithm, self._name_der) and key_hash == _digest(
            algorithm, self._key_der
        )


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize()


def _status(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )
