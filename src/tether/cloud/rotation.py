"""Renewing the gateway's own TLS certificate while it runs, without dropping a session.

``tether cloud rotate-server-cert DATA --server-ca DIR`` issues a fresh certificate (and key)
from the server issuing CA into the data directory, then appends one audit entry
(``gateway.server_certificate_rotated``). Every gateway process already follows the audit log
(the change feed, :mod:`tether.cloud.service`), so that entry is how the running service
learns of it: on any host, with no signal to deliver, no file watcher, and an audit trail of
who rotated what. The feed rebuilds the TLS context (:meth:`Gateway.reload_trust` reads the
certificate and key files again): new handshakes present the new certificate, while live
sessions keep the TLS state they negotiated (an ``SSLObject`` holds its own reference to the
old context), so nobody is dropped.

Rules:

- The CA must have the server role **and be pinned**: its certificate must be in
  ``pinned-ca.pem`` (what devices trust). A certificate from a server CA the fleet does not
  pin would strand every device at its next handshake (``server_ca_not_pinned``; for a CA
  rollover, ship the new pinned file first: README "Rolling the server CA over").
- The names default to the current certificate's (DNS and IP SANs), so a renewal is a
  renewal; ``--dns``/``--ip`` replace them.
- Files are replaced with ``os.replace`` after the new pair has been loaded into a TLS context
  (key and certificate must match); key first, chain second, audit entry last. A reload that
  happens between the two renames fails cleanly (logged) and is retried by the feed, which
  retries a failed reload on its next poll.
- The admin API's HTTPS listener reads the same files at its start: it presents the new
  certificate after ``tether cloud serve`` restarts (its TLS has no live reload in uvicorn).
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tether.cloud.gateway.tls import build_server_context
from tether.cloud.registry import Registry
from tether.cloud.settings import CloudSettings
from tether.errors import InvalidInputError
from tether.pki import IssuingCA, Role, generate_key, sha256_fingerprint
from tether.pki.store import pem

SERVER_CERTIFICATE_ROTATED = "gateway.server_certificate_rotated"


@dataclass(frozen=True)
class Rotation:
    """What a rotation did: the new and the previous certificate."""

    certificate: x509.Certificate
    fingerprint: str
    previous_fingerprint: str | None


def _current_names(chain: Path) -> tuple[list[str], list[str]]:
    try:
        leaf = x509.load_pem_x509_certificates(chain.read_bytes())[0]
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, IndexError, x509.ExtensionNotFound):
        return ["localhost"], ["127.0.0.1"]
    return (
        list(san.get_values_for_type(x509.DNSName)),
        [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
    )


def _fingerprint_of(chain: Path) -> str | None:
    try:
        return sha256_fingerprint(x509.load_pem_x509_certificates(chain.read_bytes())[0])
    except (OSError, ValueError, IndexError):
        return None


def _write_temporary(directory: Path, data: bytes, mode: int) -> Path:
    handle, name = tempfile.mkstemp(dir=directory, prefix=".rotate-")
    try:
        os.fchmod(handle, mode)
        os.write(handle, data)
        os.fsync(handle)
    finally:
        os.close(handle)
    return Path(name)


def rotate_server_certificate(
    settings: CloudSettings,
    registry: Registry,
    server_ca: IssuingCA,
    *,
    actor: str,
    dns_names: Sequence[str] | None = None,
    ip_addresses: Sequence[str] | None = None,
) -> Rotation:
    """Issue a new gateway certificate into ``settings.data_dir`` and announce it (audited).

    Raises ``InvalidInputError`` (``wrong_ca_role``, ``server_ca_not_pinned``, a bad IP) and
    changes nothing then; the registry's errors if the audit entry cannot be written (the files
    are already replaced: a restart picks them up).
    """
    if server_ca.role is not Role.SERVER:
        raise InvalidInputError(
            f"the gateway certificate must come from a server issuing CA, not a {server_ca.role} "
            "CA",
            code="wrong_ca_role",
        )
    pinned = x509.load_pem_x509_certificates(settings.pinned_ca.read_bytes())
    if server_ca.certificate not in pinned:
        raise InvalidInputError(
            f"{server_ca.certificate.subject.rfc4514_string()} is not in {settings.pinned_ca}: "
            "devices would refuse a certificate from it. Ship a pinned file with this CA to the "
            "fleet first (README: rolling the server CA over), then add it to pinned-ca.pem.",
            code="server_ca_not_pinned",
        )
    current_dns, current_ips = _current_names(settings.server_chain)
    dns = list(dns_names) if dns_names else current_dns
    try:
        ips = [ipaddress.ip_address(v) for v in (ip_addresses if ip_addresses else current_ips)]
    except ValueError as exc:
        raise InvalidInputError(f"not an IP address: {exc}") from None
    key = generate_key()
    certificate = server_ca.issue_server_certificate(
        key.public_key(), dns_names=dns, ip_addresses=ips
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    directory = settings.data_dir
    previous = _fingerprint_of(settings.server_chain)
    new_key = _write_temporary(directory, key_pem, 0o600)
    new_chain = _write_temporary(directory, pem(certificate) + pem(server_ca.certificate), 0o644)
    try:
        build_server_context(certificate_chain=new_chain, private_key=new_key, trusted_cas=[])
        os.replace(new_key, settings.server_key)
        os.replace(new_chain, settings.server_chain)
    finally:
        for leftover in (new_key, new_chain):
            leftover.unlink(missing_ok=True)
    fingerprint = sha256_fingerprint(certificate)
    registry.audit(
        actor=actor,
        action=SERVER_CERTIFICATE_ROTATED,
        target=fingerprint,
        details={
            "previous": previous,
            "not_after": certificate.not_valid_after_utc.isoformat(),
            "issuer": server_ca.certificate.subject.rfc4514_string(),
        },
    )
    return Rotation(certificate, fingerprint, previous)
