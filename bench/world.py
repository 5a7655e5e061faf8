"""A benchmark's world: a Tether PKI, a cloud data directory, device identities, a registry.

Everything is made fresh per run from ``tether.pki`` and ``tether.cloud.setup``, the same code
the product uses; nothing here is a secret worth keeping. Devices that connect get real keys and
certificates in an identities directory the load generator reads (``id-<i>.crt``, ``id-<i>.key``,
``serials.txt``). The registry is seeded by bulk inserts into the registry's own tables: one
transaction per 20,000 rows, so a million devices take seconds instead of the hours one audited
``provision_device`` call per device would. Filler devices (the "1,000,000 registered" of the
scale benchmark) carry a real-sized certificate PEM and unique fingerprints, so the tables and
indexes have the size a real fleet's would.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, insert, select, text

from tether.cloud.registry import CARole, Provisioning, Registry
from tether.cloud.registry.engine import create_registry_engine, parse_url
from tether.cloud.registry.models import CAModel, CertificateModel, DeviceModel
from tether.cloud.settings import ApiOptions, CloudSettings, GatewayOptions
from tether.cloud.setup import init_data_dir
from tether.pki import IssuingCA, Role, RootCA, SoftwareSigner, generate_key, sha256_fingerprint
from tether.pki.store import pem

CHUNK = 20_000


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class World:
    """Paths and CAs of one benchmark world."""

    base: Path
    root: RootCA
    device_ca: IssuingCA
    settings: CloudSettings
    identities: Path
    count: int

    @property
    def client_ca_file(self) -> Path:
        """Root + device CA, PEM: what a peer broker (Mosquitto) trusts for clients."""
        path = self.base / "client-cas.pem"
        if not path.exists():
            path.write_bytes(pem(self.device_ca.certificate) + pem(self.root.certificate))
        return path

    def serials(self) -> list[str]:
        return (self.identities / "serials.txt").read_text().split()


def build_world(
    base: Path,
    *,
    identities: int,
    registered: int | None = None,
    database_url: str | None = None,
) -> World:
    """Make a PKI, a cloud data directory and ``identities`` device identities under ``base``.

    ``registered`` (default ``identities``) is how many devices the registry holds in all: the
    identities plus filler devices. The data directory's gateway and API ports are free ports.
    """
    base.mkdir(parents=True, exist_ok=True)
    root = RootCA.self_sign(_signer(), common_name="Tether Bench Root")
    device_ca = root.create_issuing_ca(common_name="Tether Bench Devices", role=Role.DEVICE)
    server_ca = root.create_issuing_ca(common_name="Tether Bench Servers", role=Role.SERVER)
    settings = init_data_dir(
        base / "cloud",
        server_ca=server_ca,
        root_ca=pem(root.certificate),
        database_url=database_url,
        gateway=GatewayOptions(port=free_port()),
        api=ApiOptions(port=free_port()),
    )
    with Registry.open(settings.database_url) as registry:
        registry.register_ca(device_ca.certificate, role=CARole.DEVICE, actor="bench")
    directory = base / "identities"
    certificates = write_identities(directory, device_ca, identities)
    seed_registry(settings.database_url, device_ca, certificates, registered or identities)
    return World(base, root, device_ca, settings, directory, identities)


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """A private key as unencrypted PKCS#8 PEM, readable by its owner only (bench keys)."""
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(path, 0o600)


def _signer() -> SoftwareSigner:
    return SoftwareSigner(generate_key())


def write_identities(
    directory: Path, ca: IssuingCA, count: int, *, prefix: str = "bench"
) -> list[x509.Certificate]:
    """``count`` device keys and certificates (serials ``<prefix>-NNNNNNN``) as the load
    generator reads them."""
    directory.mkdir(parents=True, exist_ok=True)
    serials = []
    certificates = []
    for index in range(count):
        serial = f"{prefix}-{index:07d}"
        key = generate_key()
        certificate = ca.issue_device_certificate_for_key(key.public_key(), serial)
        (directory / f"id-{index}.crt").write_bytes(pem(certificate))
        write_key(directory / f"id-{index}.key", key)
        serials.append(serial)
        certificates.append(certificate)
    (directory / "serials.txt").write_text("\n".join(serials) + "\n")
    return certificates


def seed_registry(
    url: str, ca: IssuingCA, certificates: list[x509.Certificate], registered: int
) -> None:
    """Register ``certificates`` as active devices, plus filler up to ``registered`` in all."""
    engine = create_registry_engine(parse_url(url))
    now = dt.datetime.now(dt.UTC)
    sample_pem = pem(ca.certificate).decode()
    try:
        with engine.begin() as connection:
            ca_id = connection.scalar(
                select(CAModel.id).where(CAModel.fingerprint == sha256_fingerprint(ca.certificate))
            )
            first_id = (connection.scalar(select(func.max(DeviceModel.id))) or 0) + 1
        rows = _rows(certificates, registered, ca_id, first_id, now, sample_pem)
        for devices, certs in rows:
            with engine.begin() as connection:
                connection.execute(insert(DeviceModel), devices)
                connection.execute(insert(CertificateModel), certs)
        if engine.dialect.name == "postgresql":
            with engine.begin() as connection:
                for table in ("devices", "certificates"):
                    connection.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                            f"(SELECT max(id) FROM {table}))"
                        )
                    )
                connection.execute(text("ANALYZE"))
        else:
            with engine.begin() as connection:
                connection.execute(text("ANALYZE"))
    finally:
        engine.dispose()


def _rows(
    certificates: list[x509.Certificate],
    registered: int,
    ca_id: int,
    first_id: int,
    now: dt.datetime,
    sample_pem: str,
) -> Iterator[tuple[list[dict], list[dict]]]:
    devices: list[dict] = []
    certs: list[dict] = []
    for index in range(max(registered, len(certificates))):
        device_id = first_id + index
        if index < len(certificates):
            certificate = certificates[index]
            serial = certificate.subject.rfc4514_string().removeprefix("CN=")
            fingerprint = sha256_fingerprint(certificate)
            serial_number = f"{certificate.serial_number:x}"
            body = pem(certificate).decode()
            subject = certificate.subject.rfc4514_string()
        else:
            serial = f"filler-{index:08d}"
            fingerprint = hashlib.sha256(serial.encode()).hexdigest()
            serial_number = secrets.token_hex(16)
            body = sample_pem
            subject = f"CN={serial}"
        devices.append(
            {
                "id": device_id,
                "serial": serial,
                "status": "enabled",
                "provisioning": "factory",
                "first_seen": None,
                "last_seen": None,
                "created_at": now,
                "updated_at": now,
            }
        )
        certs.append(
            {
                "fingerprint": fingerprint,
                "serial_number": serial_number,
                "subject": subject,
                "issuer_id": ca_id,
                "device_id": device_id,
                "not_before": now - dt.timedelta(days=1),
                "not_after": now + dt.timedelta(days=365),
                "state": "active",
                "revocation_reason": None,
                "revoked_at": None,
                "pem": body,
                "created_at": now,
                "updated_at": now,
            }
        )
        if len(devices) == CHUNK:
            yield devices, certs
            devices, certs = [], []
    if devices:
        yield devices, certs


def add_service(world: World, directory: Path, name: str) -> tuple[Path, Path]:
    """A service CA under the world's root, registered, and one service identity ``name``.

    Returns the certificate and key paths (PEM) written under ``directory``; the service CA
    joins ``world.client_ca_file``, so a peer broker accepts the service as well.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca = world.root.create_issuing_ca(common_name="Tether Bench Services", role=Role.SERVICE)
    key = generate_key()
    certificate = ca.issue_service_certificate(key.public_key(), name=name)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(pem(certificate))
    write_key(key_path, key)
    with world.client_ca_file.open("ab") as cas:  # Mosquitto trusts the service CA too
        cas.write(pem(ca.certificate))
    with Registry.open(world.settings.database_url) as registry:
        registry.register_ca(ca.certificate, role=CARole.SERVICE, actor="bench")
        registry.add_device(name, provisioning=Provisioning.CONSOLE, actor="bench")
        registry.add_certificate(
            certificate,
            device_serial=name,
            issuer_fingerprint=sha256_fingerprint(ca.certificate),
            actor="bench",
        )
    return cert_path, key_path
