"""The gateway tests' PKI, on ``tether.pki`` where the certificates are Tether-valid.

root (tether.pki) -> device CA (CN only, raw: tests pin ``issuer == "CN=Tether Test Device
                     CA"``) -> device leaves (CN = serial, clientAuth)
                  -> service issuing CA (tether.pki) -> service leaf (tether.pki)
                  -> server issuing CA (tether.pki) -> the gateway's certificate (localhost,
                     127.0.0.1; the file holds the chain leaf + server CA)

``make_ca``, ``issue_leaf`` and ``self_signed_leaf`` build the deliberately wrong or foreign
certificates the refusal tests need (see ``tests.pki_factory``). Everything is generated per
test session in a temporary directory; nothing is checked in.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.pki_factory import (
    NOW,
    raw_ca,
    raw_leaf,
    server_certificate,
    tether_issuing_ca,
    tether_root,
    write_certificates,
    write_key,
)
from tests.pki_factory import self_signed_leaf as _self_signed
from tether.pki import Role, generate_key

__all__ = [
    "DEVICE_SERIAL",
    "NOW",
    "OTHER_SERIAL",
    "SERVICE_NAME",
    "GatewayPKI",
    "Issued",
    "build_test_pki",
    "issue_leaf",
    "make_ca",
    "self_signed_leaf",
]


@dataclass(frozen=True)
class Issued:
    """A certificate, its key, and both written as PEM files."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path


def _write(
    directory: Path, stem: str, chain: list[x509.Certificate], key: ec.EllipticCurvePrivateKey
) -> Issued:
    cert_path = write_certificates(directory / f"{stem}.pem", chain)
    key_path = write_key(directory / f"{stem}.key", key)
    return Issued(chain[0], key, cert_path, key_path)


def make_ca(
    directory: Path, common_name: str, issuer: Issued | None = None, *, stem: str | None = None
) -> Issued:
    """A CN-only CA: self-signed when ``issuer`` is None (foreign, look-alike), else under it."""
    certificate, key = raw_ca(
        common_name,
        issuer=issuer.certificate if issuer else None,
        issuer_key=issuer.key if issuer else None,
        path_length=0 if issuer else None,
    )
    return _write(directory, stem or common_name.replace(" ", "_"), [certificate], key)


def issue_leaf(
    directory: Path,
    ca: Issued,
    common_name: str,
    *,
    server: bool = False,
    stem: str | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    issuer_name: x509.Name | None = None,
    not_after: dt.datetime | None = None,
    client_auth: bool = True,
    authority_key: ec.EllipticCurvePublicKey | None = None,
) -> Issued:
    """A leaf signed by ``ca``, unchecked (``issuer_name`` overrides the issuer to forge one).

    For valid device leaves under the CN-only device CA and for every malformed variant
    (any name, P-384 ``key``, expired ``not_after``, no clientAuth, forged issuer).
    """
    key = key or generate_key()
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    if client_auth and not server:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if not usages:
        usages.append(ExtendedKeyUsageOID.CODE_SIGNING)
    san = (
        x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        )
        if server
        else None
    )
    certificate = raw_leaf(
        issuer_name or ca.certificate.subject,
        ca.key,
        common_name,
        key.public_key(),
        usages=usages,
        not_after=not_after or NOW + dt.timedelta(days=7),
        san=san,
        authority_key=authority_key,
    )
    chain = [certificate, ca.certificate] if server else [certificate]
    return _write(directory, stem or common_name, chain, key)


def self_signed_leaf(directory: Path, common_name: str, *, stem: str) -> Issued:
    """A self-signed clientAuth certificate carrying ``common_name`` (an impostor)."""
    certificate, key = _self_signed(common_name)
    return _write(directory, stem, [certificate], key)


@dataclass(frozen=True)
class GatewayPKI:
    """Everything a gateway test needs; ``root`` is what clients trust for the server."""

    directory: Path
    root: Issued
    device_ca: Issued
    service_ca: Issued
    server_ca: Issued
    server: Issued
    device: Issued  # CN = DEVICE_SERIAL
    other_device: Issued  # CN = OTHER_SERIAL
    service: Issued  # CN = SERVICE_NAME


DEVICE_SERIAL = "SN0001"
OTHER_SERIAL = "SN0002"
SERVICE_NAME = "telemetry-ingest"


def build_test_pki(directory: Path) -> GatewayPKI:
    """Generate the whole test PKI under ``directory``."""
    root, root_key = tether_root("Tether Test Root")
    root_issued = _write(directory, "root", [root.certificate], root_key)
    device_ca = make_ca(directory, "Tether Test Device CA", root_issued, stem="device_ca")
    service_ca, service_ca_key = tether_issuing_ca(root, "Tether Test Service CA", Role.SERVICE)
    server_ca, server_ca_key = tether_issuing_ca(root, "Tether Test Server CA", Role.SERVER)
    server_cert, server_key = server_certificate(server_ca, "localhost", "127.0.0.1")
    service_key = generate_key()
    service_cert = service_ca.issue_service_certificate(service_key.public_key(), name=SERVICE_NAME)
    return GatewayPKI(
        directory=directory,
        root=root_issued,
        device_ca=device_ca,
        service_ca=_write(directory, "service_ca", [service_ca.certificate], service_ca_key),
        server_ca=_write(directory, "server_ca", [server_ca.certificate], server_ca_key),
        server=_write(directory, "server", [server_cert, server_ca.certificate], server_key),
        device=issue_leaf(directory, device_ca, DEVICE_SERIAL),
        other_device=issue_leaf(directory, device_ca, OTHER_SERIAL),
        service=_write(directory, SERVICE_NAME, [service_cert], service_key),
    )
