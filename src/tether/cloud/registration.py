"""Registering a certificate issued elsewhere: a service identity, an offline ``sign-csr``.

The gateway registers an unknown certificate on its own only under a factory CA that allows
just-in-time registration. Every other certificate a registered CA signed outside the cloud
(``tether ca issue-service``, ``tether ca sign-csr`` on the ceremony host) must be registered
by an administrator before it connects, and with the same checks JIT applies, so nothing the
gateway would refuse can be registered:

- it fits the client profile (``tether.pki.lint``'s rules, the gateway's
  ``check_client_profile``) and is inside its validity window;
- its issuer is a registered, *active*, client (device, factory or service) CA, found by the
  certificate's authority key identifier and checked by signature;
- its serial number is not on that CA's published CRL, it is not registered yet, and the
  identity it names (the subject CN) is new or already belongs to that CA (invariant 11:
  a serial belongs to the CA that first vouched for it; ``move-device`` is the way to change
  that).

A new identity is recorded with provisioning ``csr`` (its key was made and kept elsewhere;
the cloud saw only the certificate). The write is one transaction with its audit row.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from tether.cloud.gateway.identity import HandshakeRefused, check_client_profile, subject_name
from tether.cloud.registry import (
    CARole,
    CAStatus,
    CertificateRecord,
    DeviceNotFoundError,
    DeviceRecord,
    Provisioning,
    Registry,
)
from tether.errors import InvalidInputError, PolicyViolationError
from tether.pki import load_certificates

CLIENT_ROLES = frozenset({CARole.DEVICE, CARole.FACTORY, CARole.SERVICE})


class CertificateRegistrationRefused(PolicyViolationError):
    """The certificate is one the gateway would refuse; nothing was registered.

    ``code`` is the refusal the gateway would log at the handshake (``profile_violation``,
    ``certificate_expired``, ``ca_not_registered``, ``ca_inactive``, ...).
    """

    code = "certificate_registration_refused"


def register_certificate(
    registry: Registry, certificate: x509.Certificate, *, actor: str
) -> tuple[DeviceRecord, CertificateRecord]:
    """Register ``certificate`` (and its identity, if new) under the registered CA that signed it.

    Raises CertificateRegistrationRefused for what the gateway would refuse, and the
    registry's own refusals (CertificateExistsError, CertificateListedOnCRLError,
    SerialBoundError). Nothing is written on a refusal.
    """
    try:
        check_client_profile(certificate, now=dt.datetime.now(dt.UTC))
        name = subject_name(certificate)
    except HandshakeRefused as exc:
        raise CertificateRegistrationRefused(exc.message, code=exc.code) from exc
    ca = _issuer(registry, certificate)
    try:
        registry.get_device(name)
    except DeviceNotFoundError:
        return registry.provision_device(
            name,
            certificate,
            issuer_fingerprint=ca,
            provisioning=Provisioning.CSR,
            actor=actor,
        )
    record = registry.add_certificate(
        certificate, device_serial=name, issuer_fingerprint=ca, actor=actor
    )
    return registry.get_device(name), record


def _issuer(registry: Registry, certificate: x509.Certificate) -> str:
    """The fingerprint of the active registered client CA that signed ``certificate``."""
    try:
        aki = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
        key_id = aki.value.key_identifier
    except x509.ExtensionNotFound:
        key_id = None
    record = None if key_id is None else registry.find_ca_by_subject_key_id(key_id)
    if record is None:
        raise CertificateRegistrationRefused(
            f"No registered CA issued {certificate.subject.rfc4514_string()} (issuer "
            f"{certificate.issuer.rfc4514_string()}); register its CA first "
            "(`tether cloud register-ca`).",
            code="ca_not_registered",
        )
    if record.role not in CLIENT_ROLES:
        raise CertificateRegistrationRefused(
            f"{record.subject} is a {record.role} CA; it issues no client identities.",
            code="profile_violation",
        )
    if record.status is not CAStatus.ACTIVE:
        raise CertificateRegistrationRefused(
            f"The CA {record.fingerprint} is {record.status}; the gateway would refuse what it "
            "signed. Activate it first if that is intended.",
            code="ca_inactive",
        )
    try:
        certificate.verify_directly_issued_by(record.certificate())
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise CertificateRegistrationRefused(
            f"The certificate names {record.subject} as issuer but its signature does not "
            "verify with that CA's key.",
            code="certificate_signature_invalid",
        ) from exc
    return record.fingerprint


def load_for_registration(data: bytes) -> x509.Certificate:
    """The first certificate of a PEM (a leaf, maybe followed by its chain) or DER upload."""
    certificates = load_certificates(data)
    if not certificates:
        raise InvalidInputError("no certificate in the upload", code="certificate_missing")
    return certificates[0]
