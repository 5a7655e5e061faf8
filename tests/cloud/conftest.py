"""End-to-end fixtures: a real cloud (registry file + CloudService on uvloop) and its PKI.

The cloud runs exactly as ``tether cloud serve`` runs it: a data directory made by
``init_data_dir``, a SQLite registry, ``CloudService`` on a uvloop event loop, here in a
background thread so that synchronous clients (awscrt, paho, raw ``ssl``) can talk to it.
Fixture names are prefixed ``cloud`` so they never shadow the gateway and registry fixtures.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.mqtt import PahoClient, RawClient, paho_connect, tls_context
from tests.support.pki import Issued, TestPKI, hostile_leaf
from tether.cloud.loop_thread import CloudThread
from tether.cloud.registry import CARole, Provisioning, Registry
from tether.cloud.service import CloudService
from tether.cloud.settings import CloudSettings
from tether.cloud.setup import init_data_dir
from tether.pki import IssuingCA, Role, sha256_fingerprint
from tether.pki.store import pem

TIMEOUT = 10.0
ACTOR = "test:e2e"


class CloudPKI(TestPKI):
    """The e2e hierarchy (``TestPKI``) with its CAs named; ``stranger_ca`` is never registered."""

    def __init__(self, directory: Path) -> None:
        super().__init__("E2E Root CA", ca_names="E2E")
        self.directory = directory
        self.root_path = directory / "root.crt.pem"
        self.root_path.write_bytes(pem(self.root.certificate))
        self.device_ca = self.ca(Role.DEVICE)
        self.factory_ca = self.ca(Role.FACTORY)
        self.service_ca = self.ca(Role.SERVICE)
        self.server_ca = self.ca(Role.SERVER)
        self.stranger_ca = self.ca(Role.DEVICE, "E2E Stranger CA")

    def expired_device(self, serial: str) -> Issued:
        """A device certificate of the registered device CA that expired yesterday."""
        now = dt.datetime.now(dt.UTC)
        return hostile_leaf(
            self.device_ca,
            serial,
            not_before=now - dt.timedelta(days=30),
            not_after=now - dt.timedelta(days=1),
        )


@pytest.fixture(scope="session")
def cloud_pki(tmp_path_factory: pytest.TempPathFactory) -> CloudPKI:
    return CloudPKI(tmp_path_factory.mktemp("cloud-pki"))


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
        issued = self.pki.device(serial).write(self.files, serial)
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
        issued = self.pki.service(name).write(self.files, name)
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
        return tls_context(self.pki.root_path, identity)

    def connack(self, identity: Issued, client_id: str) -> Any:
        """Connect once with a raw MQTT 5 client: the CONNACK (None if the connection closed
        without one, as a TLS refusal does), then close."""
        client = RawClient(self.port, self.tls_context(identity))
        try:
            return client.connect(client_id)
        finally:
            client.close()

    def paho(self, identity: Issued, client_id: str) -> PahoClient:
        """A connected paho MQTT 5 client (the CONNACK must be a success)."""
        return paho_connect(self.port, self.pki.root_path, identity, client_id)


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
    return settings, registry, serving(service)


def serving(service: CloudService) -> CloudThread:
    """``service`` started on its own loop thread (closed again if it fails to start)."""
    running = CloudThread(service)
    try:
        running.start()
    except BaseException:
        running.close()
        raise
    return running


@contextmanager
def running_cloud(directory: Path, pki: CloudPKI) -> Iterator[Cloud]:
    """A started cloud under ``directory``, stopped at the end (a module-scoped fixture's way
    to one cloud for many tests)."""
    settings, registry, running = start_cloud(directory, pki)
    try:
        yield Cloud(settings, registry, running, pki, directory / "identities")
    finally:
        running.close()
        registry.close()


@pytest.fixture
def cloud(cloud_pki: CloudPKI, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Cloud]:
    caplog.set_level(logging.INFO, logger="tether.gateway")
    caplog.set_level(logging.INFO, logger="tether.cloud")
    with running_cloud(tmp_path, cloud_pki) as started:
        yield started
