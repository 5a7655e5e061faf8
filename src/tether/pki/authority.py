"""The CA hierarchy: an offline root that signs issuing CAs, issuing CAs that sign leaves.

Profiles (all ECDSA P-256 with SHA-256, random positive serial numbers of at most 20 octets,
SKI on every certificate, AKI on every certificate, the root's pointing at itself):

- root: basicConstraints CA:TRUE (critical, no pathLen), keyUsage keyCertSign+cRLSign
  (critical), subject CN only.
- issuing CA: CA:TRUE pathLen 0 (critical), keyUsage keyCertSign+cRLSign (critical), subject
  CN + OU ``tether:<role>`` (see ``tether.pki.names``), validity inside the root's.
- device: CA:FALSE (critical), keyUsage digitalSignature (critical), EKU clientAuth, subject
  exactly CN=<validated serial>, **no subjectAltName**. The device identity is the serial and
  nothing else; a SAN would repeat it in a second place that every consumer would have to
  keep consistent, and RFC 5280 only requires a SAN when the subject is empty. The
  consequence: ``cryptography``'s verifier, which wants a SAN by default, is relaxed for
  exactly that in ``tether.pki.verify.verify_chain``. OpenSSL, stdlib ``ssl`` and awscrt do
  not require a SAN on client certificates.
- service (backend application): as device, CN = validated service name.
- server (cloud endpoint): as device but EKU serverAuth, SAN with the DNS names and IP
  addresses, CN = the first of them.

A leaf never outlives its issuer: a requested validity that reaches past the issuer's
notAfter is a ``ValidityError``, never silently clipped. Without a requested validity a
device certificate lives as long as its issuer (devices are not re-provisioned on a schedule;
revocation, not expiry, ends a device identity).

Which role may issue what: DEVICE and FACTORY issuing CAs sign device certificates, SERVER
signs server certificates, SERVICE signs service certificates (``RoleMismatchError``).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tether.pki.errors import (
    BadCsrSignatureError,
    InvalidNameError,
    KeyMismatchError,
    MalformedInputError,
    NotATetherCaError,
    RoleMismatchError,
    SubjectNotAllowedError,
    ValidityError,
)
from tether.pki.keys import generate_key, require_p256
from tether.pki.loading import PARSE_ERRORS
from tether.pki.names import (
    ROLE_OU_PREFIX,
    ROLE_PURPOSE,
    Role,
    parse_role,
    role_of,
    validate_ca_name,
    validate_dns_name,
    validate_serial,
    validate_service_name,
)
from tether.pki.signer import Signer, SoftwareSigner
from tether.pki.signing import sign_certificate, sign_crl

# Tolerate clocks a little behind ours when a certificate is used right after issuance.
CLOCK_SKEW = timedelta(minutes=5)
_ACCEPTED_CSR_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)


@dataclass(frozen=True)
class RevokedEntry:
    """One revoked certificate as it appears on a CRL."""

    serial_number: int
    revoked_at: datetime
    reason: x509.ReasonFlags | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _same_key(a: ec.EllipticCurvePublicKey, b: object) -> bool:
    if not isinstance(b, ec.EllipticCurvePublicKey):
        return False
    fmt = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return a.public_bytes(*fmt) == b.public_bytes(*fmt)


def _check_signer(certificate: x509.Certificate, signer: Signer) -> None:
    if not _same_key(signer.public_key(), certificate.public_key()):
        raise KeyMismatchError(
            "the CA key does not belong to the CA certificate; check the key reference"
        )


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        bc = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bc.ca


def _aki_from(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(
            require_p256(issuer.public_key(), "issuer key")
        )
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _key_usage(*, digital_signature: bool = False, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _window(issuer: x509.Certificate, validity: timedelta | None) -> tuple[datetime, datetime]:
    """notBefore/notAfter for a certificate from ``issuer``; refuses to outlive it."""
    now = _now()
    issuer_start, issuer_end = issuer.not_valid_before_utc, issuer.not_valid_after_utc
    if now >= issuer_end:
        raise ValidityError(
            f"the issuing CA expired on {issuer_end.isoformat()}; stand up a new issuing CA"
        )
    not_before = max(now - CLOCK_SKEW, issuer_start)
    if validity is None:
        return not_before, issuer_end
    if validity <= timedelta(0):
        raise ValidityError("the requested validity must be positive")
    not_after = now + validity
    if not_after > issuer_end:
        raise ValidityError(
            f"the requested validity ends {not_after.date().isoformat()}, after the issuer's "
            f"notAfter {issuer_end.date().isoformat()}; request at most "
            f"{(issuer_end - now).days} days"
        )
    return not_before, not_after


def _crl(
    issuer: x509.Certificate,
    signer: Signer,
    revoked: Sequence[RevokedEntry],
    next_update: timedelta,
    crl_number: int | None,
) -> x509.CertificateRevocationList:
    if next_update <= timedelta(0):
        raise ValidityError("the CRL's next update must be in the future")
    now = _now().replace(microsecond=0)
    # Monotonic without stored state: a CRL number is the issue time in milliseconds.
    number = crl_number if crl_number is not None else time.time_ns() // 1_000_000
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now)
        .next_update(now + next_update)
        .add_extension(_aki_from(issuer), critical=False)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for entry in sorted(revoked, key=lambda e: e.serial_number):
        item = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial_number)
            .revocation_date(entry.revoked_at)
        )
        # RFC 5280 5.3.1: the reason code "unspecified" SHOULD be absent.
        if entry.reason is not None and entry.reason is not x509.ReasonFlags.unspecified:
            item = item.add_extension(x509.CRLReason(entry.reason), critical=False)
        builder = builder.add_revoked_certificate(item.build())
    return sign_crl(builder, signer)


def _revocation_pointers(
    builder: x509.CertificateBuilder, crl_url: str | None, ocsp_url: str | None
) -> x509.CertificateBuilder:
    """Add the CRL distribution point and the OCSP responder, when there are any."""
    if crl_url is not None:
        point = x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(crl_url)],
            relative_name=None,
            reasons=None,
            crl_issuer=None,
        )
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    if ocsp_url is not None:
        access = x509.AccessDescription(
            x509.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
        )
        builder = builder.add_extension(x509.AuthorityInformationAccess([access]), critical=False)
    return builder


class IssuingCA:
    """An issuing (intermediate) CA: its certificate, a signer for its key, and its role."""

    def __init__(self, certificate: x509.Certificate, signer: Signer) -> None:
        """Pair ``certificate`` with ``signer``; the role is read from the certificate.

        Raises ``NotATetherCaError`` if the certificate is not a Tether issuing CA and
        ``KeyMismatchError`` if the signer's key is not the certificate's.
        """
        if not _is_ca(certificate):
            raise NotATetherCaError("the certificate is not a CA certificate (basicConstraints)")
        self.certificate = certificate
        self.signer = signer
        self.role = role_of(certificate)
        _check_signer(certificate, signer)
        # Where relying parties find this CA's revocation data; when set, every certificate
        # it issues names them (CRL distribution point, authorityInfoAccess OCSP). Plain
        # http:// URLs by convention (RFC 5280 4.2.1.13): the answers are signed.
        self.crl_distribution_point: str | None = None
        self.ocsp_url: str | None = None

    def _require_role(self, *allowed: Role) -> None:
        if self.role not in allowed:
            raise RoleMismatchError(
                f"this is a {self.role.value} issuing CA; this certificate needs a "
                f"{' or '.join(r.value for r in allowed)} issuing CA"
            )

    def _leaf(
        self,
        public_key: ec.EllipticCurvePublicKey,
        subject: x509.Name,
        validity: timedelta | None,
        eku: x509.ObjectIdentifier,
        san: x509.SubjectAlternativeName | None = None,
    ) -> x509.Certificate:
        key = require_p256(public_key, "subject key")
        not_before, not_after = _window(self.certificate, validity)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
            .add_extension(_aki_from(self.certificate), critical=False)
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        builder = _revocation_pointers(builder, self.crl_distribution_point, self.ocsp_url)
        return sign_certificate(builder, self.signer)

    def issue_device_certificate_for_key(
        self,
        public_key: ec.EllipticCurvePublicKey,
        serial: str,
        *,
        validity: timedelta | None = None,
    ) -> x509.Certificate:
        """A device certificate for a key the caller already holds (console provisioning).

        Same profile and checks as ``issue_device_certificate`` minus the CSR.
        """
        self._require_role(Role.DEVICE, Role.FACTORY)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, validate_serial(serial))])
        return self._leaf(public_key, subject, validity, ExtendedKeyUsageOID.CLIENT_AUTH)

    def issue_device_certificate(
        self,
        csr: x509.CertificateSigningRequest,
        serial: str,
        *,
        validity: timedelta | None = None,
    ) -> x509.Certificate:
        """Sign a device certificate for the key in ``csr``, subject CN=``serial``.

        The CSR must carry a P-256 key (``UnsupportedKeyError``), a valid self-signature
        (``BadCsrSignatureError``: proof of possession) and a subject that is empty or exactly
        CN=``serial`` (``SubjectNotAllowedError``: no e-mail, name or other attribute). The
        CSR's subject and requested extensions are never copied. ``validity`` defaults to the
        issuer's remaining lifetime; past the issuer's notAfter is a ``ValidityError``.
        """
        self._require_role(Role.DEVICE, Role.FACTORY)
        serial = validate_serial(serial)
        key = check_device_csr(csr)
        check_csr_subject(csr, serial)
        return self.issue_device_certificate_for_key(key, serial, validity=validity)

    def issue_server_certificate(
        self,
        public_key: ec.EllipticCurvePublicKey,
        *,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
        validity: timedelta = timedelta(days=397),
    ) -> x509.Certificate:
        """A TLS server certificate (EKU serverAuth) for the cloud endpoint.

        At least one DNS name or IP address is required; all go into the SAN, the first one
        is also the CN.
        """
        self._require_role(Role.SERVER)
        names: list[x509.GeneralName] = [x509.DNSName(validate_dns_name(n)) for n in dns_names]
        for ip in ip_addresses:
            if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
                raise InvalidNameError(f"{ip!r} is not an IP address")
            names.append(x509.IPAddress(ip))
        if not names:
            raise InvalidNameError("a server certificate needs at least one DNS name or IP")
        first = names[0].value
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(first))])
        return self._leaf(
            public_key,
            subject,
            validity,
            ExtendedKeyUsageOID.SERVER_AUTH,
            x509.SubjectAlternativeName(names),
        )

    def issue_service_certificate(
        self,
        public_key: ec.EllipticCurvePublicKey,
        *,
        name: str,
        validity: timedelta = timedelta(days=397),
    ) -> x509.Certificate:
        """A client certificate (EKU clientAuth) for a backend application, CN=``name``."""
        self._require_role(Role.SERVICE)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, validate_service_name(name))])
        return self._leaf(public_key, subject, validity, ExtendedKeyUsageOID.CLIENT_AUTH)

    def build_crl(
        self,
        revoked: Sequence[RevokedEntry],
        *,
        next_update: timedelta = timedelta(days=7),
        crl_number: int | None = None,
    ) -> x509.CertificateRevocationList:
        """This CA's CRL listing ``revoked``, signed by this CA (AKI and CRL number set)."""
        return _crl(self.certificate, self.signer, revoked, next_update, crl_number)


def check_device_csr(csr: x509.CertificateSigningRequest) -> ec.EllipticCurvePublicKey:
    """The CSR's P-256 key once its self-signature (ECDSA, SHA-2) verifies: proof of possession.

    The one place this is checked; the enroll operation calls it once per request (its
    signature verification is the expensive part) and then signs with
    ``issue_device_certificate_for_key`` after ``check_csr_subject``.
    """
    try:
        key = require_p256(csr.public_key(), "CSR key")
        if not csr.is_signature_valid:
            raise BadCsrSignatureError(
                "the CSR's signature does not verify: the requester did not prove "
                "possession of the key; regenerate the CSR with the device key"
            )
        if not isinstance(csr.signature_hash_algorithm, _ACCEPTED_CSR_HASHES):
            raise BadCsrSignatureError("the CSR must be signed with ECDSA and SHA-2")
    except PARSE_ERRORS as exc:
        raise MalformedInputError(f"the CSR could not be read: {exc}") from None
    return key


def check_csr_subject(csr: x509.CertificateSigningRequest, serial: str) -> None:
    """SubjectNotAllowedError unless the CSR's subject is empty or exactly CN=``serial``."""
    try:
        _check_csr_subject(csr.subject, serial)
    except PARSE_ERRORS as exc:
        raise MalformedInputError(f"the CSR could not be read: {exc}") from None


def _check_csr_subject(subject: x509.Name, serial: str) -> None:
    for rdn in subject.rdns:
        for attr in rdn:
            if attr.oid != NameOID.COMMON_NAME:
                raise SubjectNotAllowedError(
                    f"the CSR subject holds {attr.oid._name} ({attr.oid.dotted_string}); a "
                    "device CSR may carry only CN=<serial> (or an empty subject): Tether puts "
                    "no personal data in certificates"
                )
        if len(rdn) != 1:
            raise SubjectNotAllowedError("the CSR subject has a multi-valued name component")
    cns = [str(a.value) for a in subject]
    if len(cns) > 1:
        raise SubjectNotAllowedError("the CSR subject has more than one CN; send at most one")
    if cns and cns[0] != serial:
        raise SubjectNotAllowedError(
            f"the CSR subject CN {cns[0]!r} does not match the serial {serial!r}; check that "
            "the CSR comes from this unit"
        )


class RootCA:
    """The offline root: a self-signed certificate and a signer for its key."""

    def __init__(self, certificate: x509.Certificate, signer: Signer) -> None:
        """Pair a self-signed CA ``certificate`` with its ``signer`` (``KeyMismatchError``)."""
        if not _is_ca(certificate) or certificate.issuer != certificate.subject:
            raise NotATetherCaError("a root CA certificate must be a self-signed CA certificate")
        self.certificate = certificate
        self.signer = signer
        _check_signer(certificate, signer)

    @classmethod
    def self_sign(
        cls,
        signer: Signer,
        *,
        common_name: str = "Tether Root CA",
        validity: timedelta = timedelta(days=20 * 365),
    ) -> RootCA:
        """A new root certificate for the key behind ``signer`` (a file key or a token key)."""
        key = require_p256(signer.public_key(), "root key")
        if validity <= timedelta(0):
            raise ValidityError("the root's validity must be positive")
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, validate_ca_name(common_name))])
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
        )
        return cls(sign_certificate(builder, signer), signer)

    @classmethod
    def generate(
        cls,
        common_name: str = "Tether Root CA",
        validity: timedelta = timedelta(days=20 * 365),
    ) -> RootCA:
        """A new root with a fresh in-memory P-256 key (for ceremonies, tests and demos)."""
        return cls.self_sign(
            SoftwareSigner(generate_key()), common_name=common_name, validity=validity
        )

    def issue_intermediate(
        self,
        public_key: ec.EllipticCurvePublicKey,
        *,
        common_name: str,
        role: Role,
        validity: timedelta = timedelta(days=5 * 365),
        crl_url: str | None = None,
    ) -> x509.Certificate:
        """Sign an issuing CA certificate (pathLen 0, subject CN + OU ``tether:<role>``).

        The validity must end inside the root's (``ValidityError``). ``crl_url`` is where the
        root's CRL is published (a CRL distribution point, for ``openssl verify
        -crl_check_all`` and other relying parties).
        """
        key = require_p256(public_key, "issuing CA key")
        role = parse_role(role)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ROLE_OU_PREFIX + role.value),
                x509.NameAttribute(NameOID.COMMON_NAME, validate_ca_name(common_name)),
            ]
        )
        not_before, not_after = _window(self.certificate, validity)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ROLE_PURPOSE[role]]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
            .add_extension(_aki_from(self.certificate), critical=False)
        )
        return sign_certificate(_revocation_pointers(builder, crl_url, None), self.signer)

    def create_issuing_ca(
        self,
        *,
        common_name: str,
        role: Role,
        validity: timedelta = timedelta(days=5 * 365),
    ) -> IssuingCA:
        """An issuing CA with a new in-memory key, signed by this root (tests, the demo)."""
        key = generate_key()
        cert = self.issue_intermediate(
            key.public_key(), common_name=common_name, role=role, validity=validity
        )
        return IssuingCA(cert, SoftwareSigner(key))

    def build_crl(
        self,
        revoked: Sequence[RevokedEntry],
        *,
        next_update: timedelta = timedelta(days=30),
        crl_number: int | None = None,
    ) -> x509.CertificateRevocationList:
        """The root's CRL (revoked issuing CAs), signed by the root."""
        return _crl(self.certificate, self.signer, revoked, next_update, crl_number)
