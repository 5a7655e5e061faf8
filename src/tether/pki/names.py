"""Names in Tether certificates: device serials, service and CA names, roles, DNS names.

A device certificate's subject is exactly one CN, the validated device serial; nothing from a
CSR is ever copied into it (DESIGN.md invariant 8: no PII). An issuing CA's role is written in
its subject as one OU attribute ``tether:<role>`` (``tether:device``, ``tether:factory``,
``tether:server``, ``tether:service``): visible in any certificate viewer, needs no private
OID arc, and ``role_of`` reads it back.
"""

from __future__ import annotations

import re
from enum import StrEnum

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tether.pki.errors import InvalidNameError, InvalidSerialError, NotATetherCaError

SERIAL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ROLE_OU_PREFIX = "tether:"
_CA_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._()-]{0,63}")
_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class Role(StrEnum):
    """What an issuing CA may sign: device certs (DEVICE, FACTORY), server or service certs."""

    DEVICE = "device"
    FACTORY = "factory"
    SERVER = "server"
    SERVICE = "service"


# The one purpose (extendedKeyUsage) an issuing CA of each role vouches for. Standard verifiers
# (OpenSSL, s2n, cryptography, mbedTLS) refuse a leaf whose issuing CA's EKU lacks the leaf's
# purpose, so a client CA's key cannot mint a certificate that speaks for the cloud.
ROLE_PURPOSE: dict[Role, x509.ObjectIdentifier] = {
    Role.DEVICE: ExtendedKeyUsageOID.CLIENT_AUTH,
    Role.FACTORY: ExtendedKeyUsageOID.CLIENT_AUTH,
    Role.SERVICE: ExtendedKeyUsageOID.CLIENT_AUTH,
    Role.SERVER: ExtendedKeyUsageOID.SERVER_AUTH,
}


def parse_role(value: str) -> Role:
    """The ``Role`` named ``value``; an unknown name raises ``InvalidNameError``."""
    try:
        return Role(value)
    except ValueError:
        raise InvalidNameError(
            f"unknown CA role {value!r}; choose one of: {', '.join(r.value for r in Role)}"
        ) from None


def validate_serial(serial: str) -> str:
    """Return ``serial`` if it is a valid device serial, else raise ``InvalidSerialError``.

    The whole string must match ``^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`` (ASCII only, 1-64 chars).
    """
    if not isinstance(serial, str) or SERIAL_PATTERN.fullmatch(serial) is None:
        raise InvalidSerialError(
            f"invalid device serial {serial!r}: use 1-64 ASCII letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return serial


def validate_service_name(name: str) -> str:
    """Return ``name`` if it is a valid backend service name (same alphabet as a serial)."""
    if not isinstance(name, str) or SERIAL_PATTERN.fullmatch(name) is None:
        raise InvalidNameError(
            f"invalid service name {name!r}: use 1-64 ASCII letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def validate_ca_name(name: str) -> str:
    """Return ``name`` if it is acceptable as a CA common name (1-64 printable ASCII chars)."""
    if not isinstance(name, str) or _CA_NAME_PATTERN.fullmatch(name) is None:
        raise InvalidNameError(
            f"invalid CA name {name!r}: use 1-64 ASCII letters, digits, spaces, '.', '_', '-', "
            "'(' or ')', starting with a letter or digit"
        )
    return name


def validate_dns_name(name: str) -> str:
    """Return the lower-cased ``name`` if it is a valid LDH host name (no wildcards, ASCII)."""
    candidate = name.lower().rstrip(".") if isinstance(name, str) else ""
    labels = candidate.split(".")
    if (
        not candidate
        or len(candidate) > 253
        or not candidate.isascii()
        or not all(_DNS_LABEL.fullmatch(label) for label in labels)
    ):
        raise InvalidNameError(
            f"invalid DNS name {name!r}: use ASCII host names (letters, digits, '-', dots); "
            "wildcards and IDN U-labels are not accepted"
        )
    return candidate


def common_names(name: x509.Name) -> list[str]:
    """All CN values of ``name`` as strings."""
    return [str(attr.value) for attr in name.get_attributes_for_oid(NameOID.COMMON_NAME)]


def device_serial_of(cert: x509.Certificate) -> str:
    """The device serial in a device certificate: its single CN, validated.

    Raises ``InvalidSerialError`` when the subject is not exactly one CN holding a valid serial.
    """
    attrs = list(cert.subject)
    if len(attrs) != 1 or attrs[0].oid != NameOID.COMMON_NAME:
        raise InvalidSerialError(
            "not a Tether device certificate: the subject must be exactly one CN (the serial)"
        )
    return validate_serial(str(attrs[0].value))


def role_of(ca_cert: x509.Certificate) -> Role:
    """The role of a Tether issuing CA, read from its subject OU ``tether:<role>``.

    Raises ``NotATetherCaError`` when the certificate has no (or an unknown, or more than one)
    role OU.
    """
    values = [
        str(attr.value)
        for attr in ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
        if str(attr.value).startswith(ROLE_OU_PREFIX)
    ]
    if len(values) != 1:
        raise NotATetherCaError(
            "not a Tether issuing CA: its subject needs exactly one OU 'tether:<role>' "
            f"(roles: {', '.join(r.value for r in Role)})"
        )
    try:
        return Role(values[0].removeprefix(ROLE_OU_PREFIX))
    except ValueError:
        raise NotATetherCaError(
            f"unknown Tether CA role {values[0]!r}; known roles: {', '.join(r.value for r in Role)}"
        ) from None


def is_server_ca(certificate: x509.Certificate) -> bool:
    """True for an issuing CA that vouches for servers: ``OU=tether:server`` or EKU serverAuth.

    What a device anchors on in its pinned file (``tether.device.config.load_trust_anchors``)
    and what a trust file handed to devices must contain.
    """
    try:
        if role_of(certificate) is Role.SERVER:
            return True
    except NotATetherCaError:
        pass
    try:
        purposes = list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return False
    self_signed = certificate.issuer == certificate.subject
    return purposes == [ExtendedKeyUsageOID.SERVER_AUTH] and not self_signed
