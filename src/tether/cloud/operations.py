"""The admin service: every change an administrator makes, whichever door it comes through.

The admin API (``cloud/api/app.py``), the web console (``cloud/api/console.py``) and the
``tether cloud`` commands (``cli/cloud/``) all write through :class:`AdminOperations`, as
plain synchronous calls (the async routes run them in threads); they may read the registry
directly. Each method validates everything it can before it generates a key or touches the
registry, and each registry change is one transaction with its audit row (``actor`` = the
admin's name, or ``cli:<user>``), so a refusal changes nothing. What is not an admin's write
stays out: the gateway's path (JIT registration, refusal audits, last seen) goes from
``cloud/authority.py`` to the registry, and setup (``cloud/setup.py``) registers the online CA
while it creates the data directory.

Decisions:

- The cloud signs with one *online* device issuing CA (``api.device_ca`` in ``cloud.json``,
  passphrase at serve time). It issues console and CSR certificates and signs its own CRL
  from the registry's revocations. The root key is never given to the cloud.
- A console key is generated here, put in the response once and forgotten: it never reaches
  the registry, a log or a file.
- CRLs: the root's CRL is the one the ceremony published, uploaded by the operator and checked
  against the pinned root certificate. A registered CA whose key the cloud does not hold has
  the CRL its owner uploaded (checked against that CA), or a 404 ``crl_not_available``.
- This module has no web dependency: its errors are defined here (``api/errors.status_for``
  maps them by category like every other TetherError).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509

from tether.cloud.admin import IssuedAdminToken, create_admin, revoke_admin, rotate_admin
from tether.cloud.crl_signing import OnlineCrl
from tether.cloud.enrollment.admin import EnrollmentAdmin
from tether.cloud.policy.admin import PolicyAdmin
from tether.cloud.registry import (
    ROOT_CRL_ISSUER,
    AdminRecord,
    CARecord,
    CARole,
    CAStatus,
    CertificateRecord,
    CRLEffect,
    DeviceRecord,
    DeviceStatus,
    Provisioning,
    RegistrationCodeRecord,
    Registry,
)
from tether.errors import (
    ConfigurationError,
    ConflictError,
    NotFoundError,
    PolicyViolationError,
)
from tether.pki import (
    IssuingCA,
    RevokedEntry,
    generate_key,
    load_certificate,
    load_csr,
    sha256_fingerprint,
    validate_serial,
)
from tether.pki.errors import InputTooLargeError, MalformedInputError
from tether.pki.keys import private_key_pem
from tether.pki.loading import MAX_INPUT_BYTES, PARSE_ERRORS
from tether.pki.store import pem
from tether.pki.verification import check_verification_certificate


class OnlineCANotConfiguredError(ConfigurationError):
    """Console provisioning and CSR signing need the online device CA, which is not set up."""

    code = "online_ca_not_configured"


class OnlineCAInactiveError(ConflictError):
    """The online device CA is not active in the registry; what it signs would be refused."""

    code = "online_ca_inactive"


class CRLNotAvailableError(NotFoundError):
    """No CRL can be served for this issuer (no key here and none uploaded)."""

    code = "crl_not_available"


class CRLRejectedError(PolicyViolationError):
    """An uploaded CRL is not signed by the issuer it is uploaded for."""

    code = "crl_rejected"


class CRLSignedHereError(ConflictError):
    """The cloud signs this CA's CRL itself; an uploaded one would contradict the registry."""

    code = "crl_signed_by_cloud"


@dataclass(frozen=True)
class ConsoleBundle:
    """A console-provisioned device: records, and the three files (the key exists only here)."""

    device: DeviceRecord
    certificate: CertificateRecord
    root_ca_pem: str
    pinned_ca_pem: str  # what the device pins: the server CA, then the root
    certificate_pem: str
    private_key_pem: str


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def _refuse_older(crl: x509.CertificateRevocationList, published: bytes | None) -> None:
    """Refuse a CRL that would roll the served one back (a replayed or stale upload)."""
    if published is None:
        return
    current = x509.load_der_x509_crl(published)
    new_number, old_number = _crl_number(crl), _crl_number(current)
    older = (
        new_number < old_number
        if new_number is not None and old_number is not None
        else crl.last_update_utc < current.last_update_utc
    )
    if older:
        raise CRLRejectedError(
            "this CRL is older than the one already published (lower CRL number); upload the "
            "newest CRL the CA signed"
        )


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """One CRL from PEM or DER (size-limited; MalformedInputError when unreadable)."""
    if len(data) > MAX_INPUT_BYTES:
        raise InputTooLargeError(f"the CRL is larger than {MAX_INPUT_BYTES} bytes")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
        _ = crl.issuer, crl.extensions, len(crl)
    except PARSE_ERRORS as exc:
        raise MalformedInputError(f"not a readable CRL (PEM or DER expected): {exc}") from None
    return crl


class AdminOperations(PolicyAdmin, EnrollmentAdmin):
    """Every admin write on one registry, with the cloud's online CA (if any).

    Policy, group and attribute writes come from :class:`~tether.cloud.policy.admin.PolicyAdmin`;
    enrollment's (claims, one-time tokens) from ``EnrollmentAdmin``.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        root_certificate: x509.Certificate,
        online_ca: IssuingCA | None,
        registration_code_ttl: timedelta = timedelta(hours=1),
        pinned_ca: bytes | None = None,
        online_crl: OnlineCrl | None = None,
    ) -> None:
        """``online_ca`` must already be registered in ``registry`` (the API checks at start).

        ``pinned_ca`` is the data directory's ``pinned-ca.pem`` (server CA + root), handed to
        every device the console makes; without it the root alone is handed out.
        ``online_crl`` signs the online CA's CRL (``tether.cloud.crl_signing``; default
        validity and re-signing margin when not given).
        """
        self.registry = registry
        self.root_certificate = root_certificate
        self.pinned_ca_pem = (pinned_ca or pem(root_certificate)).decode("ascii")
        self.online_ca = online_ca
        self.registration_code_ttl = registration_code_ttl
        self._online_fingerprint = (
            None if online_ca is None else sha256_fingerprint(online_ca.certificate)
        )
        if online_crl is None and online_ca is not None:
            online_crl = OnlineCrl(online_ca)
        self._online_crl = online_crl

    @property
    def online_crl(self) -> OnlineCrl:
        """The online CA's CRL signer (only with an online CA)."""
        assert self._online_crl is not None, "no online CA"
        return self._online_crl

    def _ca(self, what: str) -> tuple[IssuingCA, str]:
        if self.online_ca is None or self._online_fingerprint is None:
            raise OnlineCANotConfiguredError(
                f"{what} needs the cloud's online device issuing CA; set api.device_ca in "
                "cloud.json (`tether cloud init --device-ca DIR`) and give its passphrase to "
                "`tether cloud serve`"
            )
        status = self.registry.get_ca(self._online_fingerprint).status
        if status != CAStatus.ACTIVE:
            raise OnlineCAInactiveError(
                f"the online device CA is {status} in the registry; the gateway would refuse "
                "what it signs. Activate it (POST /api/v1/cas/<fingerprint>/status) first"
            )
        return self.online_ca, self._online_fingerprint

    # -- devices ---------------------------------------------------------------------------

    def create_console_device(self, serial: str, *, actor: str) -> ConsoleBundle:
        """A new device with a cloud-generated P-256 key; the key is returned, never stored."""
        serial = validate_serial(serial)
        ca, fingerprint = self._ca("console provisioning")
        key = generate_key()
        certificate = ca.issue_device_certificate_for_key(key.public_key(), serial)
        device, record = self.registry.provision_device(
            serial,
            certificate,
            issuer_fingerprint=fingerprint,
            provisioning=Provisioning.CONSOLE,
            actor=actor,
        )
        return ConsoleBundle(
            device=device,
            certificate=record,
            root_ca_pem=pem(self.root_certificate).decode("ascii"),
            pinned_ca_pem=self.pinned_ca_pem,
            certificate_pem=record.pem,
            private_key_pem=private_key_pem(key).decode("ascii"),
        )

    def create_csr_device(
        self, serial: str, csr_pem: bytes, *, actor: str
    ) -> tuple[DeviceRecord, CertificateRecord]:
        """A new device whose key stays on it: its CSR signed by the online CA."""
        serial = validate_serial(serial)
        csr = load_csr(csr_pem)
        ca, fingerprint = self._ca("CSR signing")
        certificate = ca.issue_device_certificate(csr, serial)
        return self.registry.provision_device(
            serial,
            certificate,
            issuer_fingerprint=fingerprint,
            provisioning=Provisioning.CSR,
            actor=actor,
        )

    def sign_csr(self, serial: str, csr_pem: bytes, *, actor: str) -> CertificateRecord:
        """A new certificate for a known device from its CSR (DeviceNotFoundError if unknown)."""
        serial = validate_serial(serial)
        csr = load_csr(csr_pem)
        ca, fingerprint = self._ca("CSR signing")
        self.registry.get_device(serial)
        certificate = ca.issue_device_certificate(csr, serial)
        return self.registry.add_certificate(
            certificate, device_serial=serial, issuer_fingerprint=fingerprint, actor=actor
        )

    def register_certificate(
        self, certificate_pem: bytes, *, actor: str
    ) -> tuple[DeviceRecord, CertificateRecord]:
        """Register a certificate a registered CA signed elsewhere, with JIT's checks.

        See :mod:`tether.cloud.registration` (service identities, offline ``sign-csr``).
        """
        from tether.cloud.registration import load_for_registration, register_certificate

        return register_certificate(
            self.registry, load_for_registration(certificate_pem), actor=actor
        )

    def set_device_status(self, serial: str, status: DeviceStatus, *, actor: str) -> DeviceRecord:
        """Enable or disable a device; disabled: refused at the next handshake, session dropped."""
        return self.registry.set_device_status(serial, status, actor=actor)

    def rebind_device(self, serial: str, *, ca_fingerprint: str, actor: str) -> DeviceRecord:
        """Hand a serial to another CA: the one explicit way a serial changes owner."""
        return self.registry.rebind_device(serial, ca_fingerprint=ca_fingerprint, actor=actor)

    def revoke_certificate(
        self, fingerprint: str, *, reason: x509.ReasonFlags, actor: str
    ) -> CertificateRecord:
        """Revoke a certificate: refused from the next handshake, live session dropped."""
        return self.registry.revoke_certificate(fingerprint, reason=reason, actor=actor)

    # -- CA registration and status --------------------------------------------------------

    def trust_ca(
        self, cert: x509.Certificate, *, role: CARole, allow_auto_registration: bool, actor: str
    ) -> CARecord:
        """Register a CA an operator on the cloud host vouches for (no registration code)."""
        return self.registry.register_ca(
            cert, role=role, allow_auto_registration=allow_auto_registration, actor=actor
        )

    def set_ca_status(self, fingerprint: str, status: CAStatus, *, actor: str) -> CARecord:
        """Activate, deactivate or revoke a CA; leaving active cuts every device under it."""
        return self.registry.set_ca_status(fingerprint, status, actor=actor)

    def new_registration_code(self, *, actor: str) -> RegistrationCodeRecord:
        """A fresh random single-use code, valid for ``registration_code_ttl``."""
        code = secrets.token_hex(16)
        expires = datetime.now(UTC) + self.registration_code_ttl
        return self.registry.create_registration_code(code, expires_at=expires, actor=actor)

    def register_ca(
        self,
        ca_pem: bytes,
        verification_pem: bytes,
        *,
        code: str,
        role: CARole,
        allow_auto_registration: bool,
        actor: str,
    ) -> CARecord:
        """Register a CA whose owner proved possession of its key with ``code``."""
        ca_cert = load_certificate(ca_pem)
        verification = load_certificate(verification_pem)
        check_verification_certificate(ca_cert, verification, code)
        return self.registry.register_ca_with_code(
            ca_cert,
            code=code,
            role=role,
            allow_auto_registration=allow_auto_registration,
            actor=actor,
        )

    # -- admins ----------------------------------------------------------------------------

    def create_admin(self, name: str, *, actor: str) -> IssuedAdminToken:
        """A new administrator; its token is in the result only (the registry keeps a hash)."""
        return create_admin(self.registry, name, actor=actor)

    def rotate_admin(self, name: str, *, actor: str) -> IssuedAdminToken:
        """A new token for ``name`` (in the result only); the old one is refused at once."""
        return rotate_admin(self.registry, name, actor=actor)

    def revoke_admin(self, name: str, *, actor: str) -> AdminRecord:
        """Revoke ``name`` for good; never the last active administrator."""
        return revoke_admin(self.registry, name, actor=actor)

    # -- CRLs ------------------------------------------------------------------------------

    def publish_crl(self, issuer: str, crl_pem: bytes, *, actor: str) -> CRLEffect:
        """Store the CRL the cloud serves for ``issuer`` ("root" or a registered CA) and apply it.

        A published CRL revokes: every registered certificate (or, for the root, every issuing
        CA) it lists is revoked in the registry, refused at the next handshake and dropped if
        live, exactly like a revocation through the API. A CRL that does not verify against
        the CA, or is older than the one already published (lower CRL number), is refused
        and changes nothing.
        """
        crl = load_crl(crl_pem)
        if issuer == ROOT_CRL_ISSUER:
            issuer_cert = self.root_certificate
        else:
            record = self.registry.get_ca(issuer)
            if record.fingerprint == self._online_fingerprint:
                raise CRLSignedHereError(
                    "the cloud holds this CA's key and signs its CRL from the registry; "
                    "revoke certificates through the API instead"
                )
            issuer, issuer_cert = record.fingerprint, record.certificate()
        if crl.issuer != issuer_cert.subject or not crl.is_signature_valid(
            issuer_cert.public_key()  # type: ignore[arg-type]
        ):
            raise CRLRejectedError(
                f"this CRL was not signed by {issuer_cert.subject.rfc4514_string()}; upload "
                "the CRL that CA published"
            )
        _refuse_older(crl, self.registry.published_crl(issuer))
        return self.registry.apply_crl(issuer, crl, issuer_certificate=issuer_cert, actor=actor)

    def crl(self, issuer: str) -> bytes:
        """The DER CRL served for ``issuer`` ("root" or a registered CA's fingerprint)."""
        if issuer == ROOT_CRL_ISSUER:
            der = self.registry.published_crl(ROOT_CRL_ISSUER)
            if der is None:
                raise CRLNotAvailableError(
                    "no root CRL has been published yet; upload the ceremony's crl.pem with "
                    "PUT /api/v1/crl/root"
                )
            return der
        record = self.registry.get_ca(issuer)
        if record.fingerprint == self._online_fingerprint and self.online_ca is not None:
            revoked = [
                RevokedEntry(c.serial_int, c.revoked_at or c.updated_at, c.revocation_reason)
                for c in self.registry.revoked_certificates(record.fingerprint)
            ]
            return self.online_crl.der(revoked)
        der = self.registry.published_crl(record.fingerprint)
        if der is None:
            raise CRLNotAvailableError(
                f"the cloud does not hold the key of {record.subject} and its owner has not "
                f"uploaded a CRL; upload one with PUT /api/v1/cas/{record.fingerprint}/crl"
            )
        return der


def check_online_ca(registry: Registry, ca: IssuingCA) -> None:
    """Refuse to serve with an online CA the registry does not trust (ConfigurationError).

    Certificates it issued would be refused by the gateway, so fail at start, not per device.
    """
    fingerprint = sha256_fingerprint(ca.certificate)
    try:
        record = registry.get_ca(fingerprint)
    except NotFoundError:
        raise OnlineCANotConfiguredError(
            f"the online device CA {ca.certificate.subject.rfc4514_string()} is not registered; "
            "register it with `tether cloud register-ca DATA CERT --role device`"
        ) from None
    if record.role not in (CARole.DEVICE, CARole.FACTORY) or record.status != CAStatus.ACTIVE:
        raise OnlineCANotConfiguredError(
            f"the online device CA is registered as a {record.status} {record.role} CA; it "
            "must be an active device CA"
        )
