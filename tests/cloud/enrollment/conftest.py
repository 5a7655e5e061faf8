"""Fixtures for enrollment: a real registry, the CloudPKI's device CA as the operational CA."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.cloud.conftest import ACTOR, Cloud, CloudPKI
from tests.pki.util import cn, csr_for
from tether.cloud.authority import RegistryAuthority
from tether.cloud.enrollment import EnrollmentService
from tether.cloud.enrollment.mqtt import MqttEnrollment
from tether.cloud.gateway.identity import Identity
from tether.cloud.operations import AdminOperations
from tether.cloud.registry import CARole, Registry
from tether.pki import generate_key, sha256_fingerprint


def csr_pem(key: object, serial: str | None) -> bytes:
    """A PEM CSR signed by ``key``, subject CN=serial (or empty)."""
    csr = csr_for(key, cn(serial) if serial else None)
    return csr.public_bytes(serialization.Encoding.PEM)


@dataclass
class World:
    """A registry with the test CAs, the authority the gateway uses, and the service."""

    registry: Registry
    authority: RegistryAuthority
    enrollment: EnrollmentService
    admin: AdminOperations
    pki: CloudPKI

    def identity(self, certificate: x509.Certificate) -> Identity:
        """What the gateway would make of this certificate (JIT included)."""
        return self.authority.authorize_sync(certificate)

    def factory_unit(self, serial: str) -> tuple[object, x509.Certificate]:
        """A factory-made unit: key and birth certificate from the factory CA (JIT)."""
        key = generate_key()
        return key, self.pki.factory_ca.issue_device_certificate_for_key(key.public_key(), serial)

    def certificates(self) -> int:
        return self.registry.list_certificates(limit=1).total


def make_world(registry: Registry, pki: CloudPKI, **options: object) -> World:
    registry.register_ca(pki.device_ca.certificate, role=CARole.DEVICE, actor=ACTOR)
    registry.register_ca(
        pki.factory_ca.certificate,
        role=CARole.FACTORY,
        allow_auto_registration=True,
        actor=ACTOR,
    )
    registry.register_ca(pki.stranger_ca.certificate, role=CARole.DEVICE, actor=ACTOR)
    service = EnrollmentService(
        registry,
        pki.device_ca,
        validity=timedelta(days=3),
        overlap=timedelta(hours=1),
        chain_extra=(pki.root.certificate,),
        **options,  # type: ignore[arg-type]
    )
    admin = AdminOperations(
        registry, root_certificate=pki.root.certificate, online_ca=pki.device_ca
    )
    return World(registry, RegistryAuthority(registry), service, admin, pki)


@pytest.fixture
def world(cloud_pki: CloudPKI, tmp_path: Path) -> Iterator[World]:
    registry = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}")
    built = make_world(registry, cloud_pki)
    try:
        yield built
    finally:
        built.authority.close()
        registry.close()


def fingerprint(certificate: x509.Certificate) -> str:
    return sha256_fingerprint(certificate)


@dataclass
class Enrolling:
    cloud: Cloud
    handler: MqttEnrollment
    admin: AdminOperations


@pytest.fixture
def enrolling(cloud: Cloud) -> Iterator[Enrolling]:
    service = EnrollmentService(
        cloud.registry,
        cloud.pki.device_ca,
        overlap=timedelta(seconds=30),
        chain_extra=(cloud.pki.root.certificate,),
    )
    handler = MqttEnrollment(service, tick=0.2)

    async def attach() -> None:
        handler.attach(cloud.service.gateway.broker)

    cloud.running.call(attach())
    admin = AdminOperations(
        cloud.registry, root_certificate=cloud.pki.root.certificate, online_ca=cloud.pki.device_ca
    )
    try:
        yield Enrolling(cloud, handler, admin)
    finally:
        cloud.running.call(handler.close())
