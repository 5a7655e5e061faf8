"""End-to-end fixtures: a real cloud (registry file + CloudService on uvloop) and its PKI.

The cloud runs exactly as ``tether cloud serve`` runs it: a data directory made by
``init_data_dir``, a SQLite registry, ``CloudService`` on a uvloop event loop, here in a
background thread so that synchronous clients (awscrt, paho, raw ``ssl``) can talk to it.
Fixture names are prefixed ``cloud`` so they never shadow the gateway and registry fixtures.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.cloud.gateway.harness import PahoClient, paho_connect_pinned
from tests.cloud.gateway.pki import Issued
from tether.cloud.registry import CARole, Provisioning, Registry
from tether.cloud.service import CloudService
from tether.cloud.settings import CloudSettings
from tether.cloud.setup import init_data_dir
from tether.pki import IssuingCA, Role, RootCA, generate_key, sha256_fingerprint
from tether.pki.signing import sign_certificate
from tether.pki.store import pem

T = TypeVar("T")
# The profile's keyUsage for a client certificate, so that a hand-built one differs from the
# profile only where a test means it to.
DEVICE_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
TIMEOUT = 10.0
ACTOR = "test:e2e"


def write_identity(directory: Path, stem: str, certificate: x509.Certificate, key: Any) -> Issued:
    """Write a certificate and its unencrypted key (0600) as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{stem}.crt.pem"
    key_path = directory / f"{stem}.key.pem"
    cert_path.write_bytes(pem(certificate))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Issued(certificate, key, cert_path, key_path)


@dataclass(frozen=True)
class CloudPKI:
    """A Tether hierarchy made with ``tether.pki``; ``stranger_ca`` is never registered."""

    directory: Path
    root: RootCA
    root_path: Path
    device_ca: IssuingCA
    factory_ca: IssuingCA
    service_ca: IssuingCA
    server_ca: IssuingCA
    stranger_ca: IssuingCA

    def device(self, ca: IssuingCA, serial: str, directory: Path) -> Issued:
        """A device certificate for a fresh key held in a file (console-style provisioning)."""
        key = generate_key()
        certificate = ca.issue_device_certificate_for_key(key.public_key(), serial)
        return write_identity(directory, serial, certificate, key)

    def expired_device(self, serial: str, directory: Path) -> Issued:
        """A device certificate of the registered device CA that expired yesterday."""
        key = generate_key()
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial)]))
            .issuer_name(self.device_ca.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=30))
            .not_valid_after(now - dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(DEVICE_KEY_USAGE, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.device_ca.certificate.public_key()  # type: ignore[arg-type]
                ),
                critical=False,
            )
        )
        certificate = sign_certificate(builder, self.device_ca.signer)
        return write_identity(directory, f"{serial}-expired", certificate, key)

    def service(self, name: str, directory: Path) -> Issued:
        key = generate_key()
        certificate = self.service_ca.issue_service_certificate(key.public_key(), name=name)
        return write_identity(directory, name, certificate, key)


@pytest.fixture(scope="session")
def cloud_pki(tmp_path_factory: pytest.TempPathFactory) -> CloudPKI:
    directory = tmp_path_factory.mktemp("cloud-pki")
    root = RootCA.generate(common_name="E2E Root CA")
    root_path = directory / "root.crt.pem"
    root_path.write_bytes(pem(root.certificate))
    return CloudPKI(
        directory=directory,
        root=root,
        root_path=root_path,
        device_ca=root.create_issuing_ca(common_name="E2E Device CA", role=Role.DEVICE),
        factory_ca=root.create_issuing_ca(common_name="E2E Factory CA", role=Role.FACTORY),
        service_ca=root.create_issuing_ca(common_name="E2E Service CA", role=Role.SERVICE),
        server_ca=root.create_issuing_ca(common_name="E2E Server CA", role=Role.SERVER),
        stranger_ca=root.create_issuing_ca(common_name="E2E Stranger CA", role=Role.DEVICE),
    )


class CloudThread:
    """A started ``CloudService`` on a uvloop event loop in a daemon thread."""

    def __init__(self, service: CloudService) -> None:
        self.service = service
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = self.call(service.start())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = TIMEOUT) -> T:
        """Run a coroutine on the service's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the service and its loop; safe to call twice."""
        if self.loop.is_closed() or not self.thread.is_alive():
            return
        try:
            self.call(self.service.stop(), timeout=15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            if not self.thread.is_alive():
                self.loop.close()


@dataclass
class Cloud:
    """A running cloud: its settings, its registry, the service thread and the PKI."""

    settings: CloudSettings
    registry: Registry
    running: CloudThread
    pki: CloudPKI
    files: Path

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def service(self) -> CloudService:
        return self.running.service

    def fingerprint(self, ca: IssuingCA) -> str:
        return sha256_fingerprint(ca.certificate)

    def console_device(self, serial: str) -> Issued:
        """A device registered beforehand with a certificate of the device CA (key in a file)."""
        issued = self.pki.device(self.pki.device_ca, serial, self.files)
        self.registry.add_device(serial, provisioning=Provisioning.CONSOLE, actor=ACTOR)
        self.registry.add_certificate(
            issued.certificate,
            device_serial=serial,
            issuer_fingerprint=self.fingerprint(self.pki.device_ca),
            actor=ACTOR,
        )
        return issued

    def service_identity(self, name: str) -> Issued:
        """A back-end service registered like a device, with a service CA certificate."""
        issued = self.pki.service(name, self.files)
        self.registry.add_device(name, provisioning=Provisioning.CONSOLE, actor=ACTOR)
        self.registry.add_certificate(
            issued.certificate,
            device_serial=name,
            issuer_fingerprint=self.fingerprint(self.pki.service_ca),
            actor=ACTOR,
        )
        return issued

    def tls_context(self, identity: Issued) -> ssl.SSLContext:
        """A stdlib client context pinned to the root, presenting ``identity``."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=self.pki.root_path)
        context.load_cert_chain(identity.cert_path, identity.key_path)
        return context

    def paho(self, identity: Issued, client_id: str) -> PahoClient:
        """A connected paho MQTT 5 client (the CONNACK must be a success)."""
        return paho_connect_pinned(self.port, self.pki.root_path, identity, client_id)


def start_cloud(
    directory: Path, pki: CloudPKI, *, poll_interval: float = 0.01
) -> tuple[CloudSettings, Registry, CloudThread]:
    """A data directory, a registry with the test CAs, and a started service."""
    settings = init_data_dir(
        directory / "data", server_ca=pki.server_ca, root_ca=pem(pki.root.certificate)
    )
    registry = Registry.open(settings.database_url)
    registry.register_ca(pki.device_ca.certificate, role=CARole.DEVICE, actor=ACTOR)
    registry.register_ca(
        pki.factory_ca.certificate,
        role=CARole.FACTORY,
        allow_auto_registration=True,
        actor=ACTOR,
    )
    registry.register_ca(pki.service_ca.certificate, role=CARole.SERVICE, actor=ACTOR)
    service = CloudService(
        registry,
        settings.gateway_settings(port=0, connect_timeout=5.0),
        poll_interval=poll_interval,
    )
    return settings, registry, CloudThread(service)


@pytest.fixture
def cloud(cloud_pki: CloudPKI, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Cloud]:
    caplog.set_level(logging.INFO, logger="tether.gateway")
    caplog.set_level(logging.INFO, logger="tether.cloud")
    settings, registry, running = start_cloud(tmp_path, cloud_pki)
    try:
        yield Cloud(settings, registry, running, cloud_pki, tmp_path / "identities")
    finally:
        running.close()
        registry.close()
