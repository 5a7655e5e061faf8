"""Who is on the other end of a connection, and who decides that.

The TLS layer proves that the peer holds the key of a certificate that chains to a trusted
CA. Everything after that (does the certificate fit the profile, is it revoked, is the device
disabled, which kind of identity is it) is the ``IdentityAuthority``'s verdict, asked once per
connection. The gateway only ever acts on the ``Identity`` the authority returns: a message is
attributed to that identity, never to a field the client chose.

``StaticAuthority`` is a real, in-memory authority for embedded and development use (and the
gateway's own tests); the registry provides the production one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from tether.errors import InvalidInputError, PermissionDeniedError
from tether.pki.lint import client_violations
from tether.pki.loading import sha256_fingerprint
from tether.pki.names import SERIAL_PATTERN

# A device serial or service name becomes a topic level (``devices/<serial>/...``), so it must
# never contain MQTT separators or wildcards: the one serial grammar of the profile.
IDENTITY_NAME_PATTERN = SERIAL_PATTERN

# Refusal codes whose CONNACK is 0x86 "Bad User Name or Password": the credential itself is
# bad. Every other refusal code is answered with 0x87 "Not authorized".
BAD_CREDENTIAL_CODES = frozenset(
    {
        "ca_not_registered",
        "certificate_revoked",
        "certificate_expired",
        "certificate_not_yet_valid",
        "certificate_signature_invalid",
        "profile_violation",
    }
)


class IdentityKind(StrEnum):
    """What a certificate speaks for: a device of the fleet or a back-end service."""

    DEVICE = "device"
    SERVICE = "service"
    # Enroll-only (issue 16): a claim certificate, or a birth certificate in its grace period
    # after its device enrolled. It may only publish ``$tether/enroll``; every topic policy
    # refuses it everything else (the default policy grants unknown kinds nothing).
    CLAIM = "claim"


@dataclass(frozen=True)
class Identity:
    """The authority's verdict on a client certificate.

    ``name`` is the device serial (device) or the service name (service), taken from the
    certificate subject; ``certificate_fingerprint`` is the SHA-256 of the DER certificate in
    lowercase hex (see :func:`certificate_fingerprint`); ``issuer`` is the issuer DN (RFC 4514)
    and ``issuer_fingerprint`` the issuing CA certificate's fingerprint.
    """

    kind: IdentityKind
    name: str
    certificate_fingerprint: str
    issuer: str
    issuer_fingerprint: str = ""  # the issuing CA's SHA-256 (what CA deactivation matches)


class HandshakeRefused(PermissionDeniedError):
    """The authority refused a client certificate; the connection is closed.

    ``code`` names the refusal (``no_client_certificate``, ``ca_not_registered``,
    ``certificate_revoked``, ``device_disabled``, ``profile_violation``, ...); the gateway logs
    it and answers a CONNECT with 0x86 when the code is in ``BAD_CREDENTIAL_CODES``, else 0x87.
    """

    code = "handshake_refused"

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code)


@runtime_checkable
class IdentityAuthority(Protocol):
    """Decides which CAs the TLS layer trusts and who a verified client certificate is."""

    def trusted_ca_certificates(self) -> Sequence[x509.Certificate]:
        """The CA certificates the TLS layer trusts now (read again on ``reload_trust``)."""
        ...

    async def authorize(self, leaf: x509.Certificate) -> Identity:
        """Return the identity of a client whose TLS handshake succeeded.

        Called once per connection, on the event loop: it must not block (run sync storage
        through ``asyncio.to_thread``). Raises ``HandshakeRefused`` with a specific code.
        """
        ...


# The registry's and the gateway's key for a certificate is the PKI's fingerprint: lowercase
# hex SHA-256 of the DER. One definition, so the two can never disagree.
certificate_fingerprint = sha256_fingerprint


def subject_name(certificate: x509.Certificate) -> str:
    """The single subject CN of a client certificate, checked against the name pattern.

    Raises ``HandshakeRefused("profile_violation")`` if there is not exactly one CN or it
    could be mistaken for a topic path.
    """
    common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(common_names) != 1:
        raise HandshakeRefused(
            "The client certificate must carry exactly one subject CN (the device serial or "
            "service name); issue it with `tether ca` again.",
            code="profile_violation",
        )
    value = common_names[0].value
    name = value if isinstance(value, str) else value.decode("utf-8", "replace")
    if not IDENTITY_NAME_PATTERN.fullmatch(name):
        raise HandshakeRefused(
            f"The certificate subject CN {name!r} is not a valid identity name (letters, "
            "digits, '.', '_', '-'; at most 64); issue a certificate with a valid serial.",
            code="profile_violation",
        )
    return name


def check_client_profile(leaf: x509.Certificate, *, now: dt.datetime) -> None:
    """Check a client certificate against the Tether profile, the same rules as ``tether lint``.

    The rules live in ``tether.pki.lint`` (ECDSA P-256 key, ECDSA-SHA256 signature,
    basicConstraints CA:FALSE, keyUsage critical with digitalSignature, extendedKeyUsage
    clientAuth, subject exactly one CN holding a valid serial, no subjectAltName, key
    identifiers); here they become a refusal. Raises ``HandshakeRefused`` with code
    ``profile_violation`` (the finding codes in the message), ``certificate_expired`` or
    ``certificate_not_yet_valid``.
    """
    violations = client_violations(leaf)
    if violations:
        details = "; ".join(f"{f.code}: {f.message}" for f in violations[:4])
        raise HandshakeRefused(
            f"The client certificate does not fit the Tether profile ({details}); issue it "
            "again from a Tether CA and check it with `tether lint`.",
            code="profile_violation",
        )
    if now < leaf.not_valid_before_utc:
        raise HandshakeRefused(
            "The client certificate is not valid yet; check the device clock.",
            code="certificate_not_yet_valid",
        )
    if now > leaf.not_valid_after_utc:
        raise HandshakeRefused(
            "The client certificate has expired; renew it.", code="certificate_expired"
        )
    subject_name(leaf)


def _require_ca(certificate: x509.Certificate) -> x509.Certificate:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise InvalidInputError(
            f"{certificate.subject.rfc4514_string()} is not a CA certificate (basicConstraints "
            "CA:TRUE); pass the issuing CA certificates, not device certificates.",
            code="gateway_not_a_ca",
        )
    return certificate


class StaticAuthority:
    """An in-memory identity authority: fixed device and service CAs, revocations in a set.

    The identity name is the leaf's subject CN; the kind comes from which CA issued the leaf,
    decided by checking the leaf's signature with each candidate CA's key (a matching issuer
    name alone proves nothing). ``revoke`` and ``disable`` take effect at the next handshake;
    the caller drops live sessions with ``Gateway.drop_sessions``. Not persistent: for embedded
    and development use, and for tests. Mutate it only from the gateway's event loop thread or
    while no handshake runs (plain sets, no locks).
    """

    def __init__(
        self,
        *,
        device_cas: Iterable[x509.Certificate],
        service_cas: Iterable[x509.Certificate] = (),
    ) -> None:
        self._device_cas = tuple(_require_ca(ca) for ca in device_cas)
        self._service_cas = tuple(_require_ca(ca) for ca in service_cas)
        device_fps = {certificate_fingerprint(ca) for ca in self._device_cas}
        if any(certificate_fingerprint(ca) in device_fps for ca in self._service_cas):
            raise InvalidInputError(
                "A CA cannot issue both device and service identities; use separate CAs.",
                code="gateway_ca_role_conflict",
            )
        self._revoked: set[str] = set()
        self._disabled: set[str] = set()

    def trusted_ca_certificates(self) -> Sequence[x509.Certificate]:
        """Device CAs then service CAs."""
        return self._device_cas + self._service_cas

    def revoke(self, fingerprint: str) -> None:
        """Refuse the certificate with this SHA-256 fingerprint (hex, any case, ':' allowed)."""
        self._revoked.add(fingerprint.replace(":", "").lower())

    def disable(self, name: str) -> None:
        """Refuse every certificate whose subject CN is ``name``."""
        self._disabled.add(name)

    def enable(self, name: str) -> None:
        """Undo ``disable``."""
        self._disabled.discard(name)

    async def authorize(self, leaf: x509.Certificate) -> Identity:
        """Profile, issuing CA (by signature), revocation, disabled names; in that order."""
        check_client_profile(leaf, now=dt.datetime.now(dt.UTC))
        kind, ca = self._issuing_kind(leaf)
        fingerprint = certificate_fingerprint(leaf)
        name = subject_name(leaf)
        if fingerprint in self._revoked:
            raise HandshakeRefused(
                f"Certificate {fingerprint} of {name!r} is revoked; the device needs a new one.",
                code="certificate_revoked",
            )
        if name in self._disabled:
            raise HandshakeRefused(
                f"{kind.value.capitalize()} {name!r} is disabled; enable it to let it connect.",
                code=f"{kind.value}_disabled",
            )
        return Identity(
            kind=kind,
            name=name,
            certificate_fingerprint=fingerprint,
            issuer=leaf.issuer.rfc4514_string(),
            issuer_fingerprint=certificate_fingerprint(ca),
        )

    def _issuing_kind(self, leaf: x509.Certificate) -> tuple[IdentityKind, x509.Certificate]:
        for kind, cas in (
            (IdentityKind.DEVICE, self._device_cas),
            (IdentityKind.SERVICE, self._service_cas),
        ):
            for ca in cas:
                try:
                    leaf.verify_directly_issued_by(ca)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                return kind, ca
        raise HandshakeRefused(
            f"No registered CA issued the certificate of {leaf.subject.rfc4514_string()!r}; "
            "register its issuing CA first.",
            code="ca_not_registered",
        )
