"""The device tests' PKI on ``tether.pki``: every certificate here is a valid Tether one.

root -> device issuing CA -> device leaves (CN = serial, clientAuth)
cloud root (what the device pins) -> server issuing CA -> the broker's server certificates
rogue root -> rogue server issuing CA -> a server certificate no device should trust

A server certificate file holds the chain (leaf, then its issuing CA) so that a client that
trusts only the root can verify it, as a device trusts only the pinned cloud CA. Everything is
generated per test session in a temporary directory; nothing is checked in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.pki_factory import (
    server_certificate,
    tether_issuing_ca,
    tether_root,
    write_certificates,
    write_key,
)
from tether.pki import IssuingCA, Role, RootCA, generate_key


@dataclass(frozen=True)
class Issued:
    """A certificate with its key (``None`` when the key lives in a token) and its chain."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey | None
    chain: tuple[x509.Certificate, ...] = field(default=())  # issuing CAs after the leaf

    def write(self, directory: Path, stem: str) -> tuple[Path, Path | None]:
        cert_path = write_certificates(directory / f"{stem}.crt", [self.certificate, *self.chain])
        if self.key is None:
            return cert_path, None
        return cert_path, write_key(directory / f"{stem}.key", self.key)


@dataclass(frozen=True)
class Hierarchy:
    """A root and one issuing CA under it (both ``tether.pki`` objects)."""

    root: RootCA
    issuing: IssuingCA

    @property
    def root_issued(self) -> Issued:
        return Issued(self.root.certificate, None)


def make_hierarchy(root_name: str, issuing_name: str, role: Role) -> Hierarchy:
    """A new Tether root with one issuing CA of ``role``."""
    root, _ = tether_root(root_name)
    issuing, _ = tether_issuing_ca(root, issuing_name, role)
    return Hierarchy(root, issuing)


def issue_device(
    ca: IssuingCA, serial: str, public_key: ec.EllipticCurvePublicKey | None = None
) -> Issued:
    """A Tether device certificate for ``serial``; a fresh key unless ``public_key`` is given."""
    key = None if public_key is not None else generate_key()
    public = public_key if public_key is not None else key.public_key()  # type: ignore[union-attr]
    return Issued(ca.issue_device_certificate_for_key(public, serial), key)


def issue_server(ca: IssuingCA, cn: str = "cloud.test", ip: str = "127.0.0.1") -> Issued:
    """A Tether server certificate for ``cn`` and ``ip``, written with its issuing CA."""
    certificate, key = server_certificate(ca, cn, ip)
    return Issued(certificate, key, (ca.certificate,))
