"""Just-in-time registration on first connect under a CA that allows it."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from tests.support.pki import Issued, raw_leaf
from tether.cloud.registry import (
    AutoRegistrationPolicyError,
    CANotRegisteredError,
    CARole,
    CAStateError,
    CAStatus,
    CertificateExistsError,
    CertificateIssuerMismatchError,
    CertState,
    DeviceStatus,
    Provisioning,
    Registry,
    SerialBoundError,
    certificate_fingerprint,
)

Snapshot = Callable[[], dict[str, list[tuple[object, ...]]]]


@pytest.fixture
def jit_fp(registry: Registry, factory_ca: Issued) -> str:
    return registry.register_ca(
        factory_ca.certificate, role=CARole.FACTORY, allow_auto_registration=True, actor="a"
    ).fingerprint


def test_jit_creates_device_and_certificate_atomically(
    registry: Registry, factory_ca: Issued, jit_fp: str
) -> None:
    cert = raw_leaf(factory_ca, "SN-1").certificate
    device, record = registry.register_device_just_in_time(
        cert, device_serial="SN-1", issuer_fingerprint=jit_fp
    )
    assert device.serial == "SN-1" and device.provisioning is Provisioning.JIT
    assert device.status is DeviceStatus.ENABLED
    assert record.fingerprint == certificate_fingerprint(cert)
    assert record.device_serial == "SN-1" and record.state is CertState.ACTIVE
    assert record.issuer_fingerprint == jit_fp
    entry = registry.list_audit().items[0]
    assert (entry.actor, entry.action, entry.target) == ("gateway", "device.register_jit", "SN-1")
    assert entry.details["device_created"] is True


def test_jit_is_idempotent(registry: Registry, factory_ca: Issued, jit_fp: str) -> None:
    cert = raw_leaf(factory_ca, "SN-1").certificate
    first = registry.register_device_just_in_time(
        cert, device_serial="SN-1", issuer_fingerprint=jit_fp
    )
    audit_total = registry.list_audit().total
    second = registry.register_device_just_in_time(
        cert, device_serial="SN-1", issuer_fingerprint=jit_fp
    )
    assert second == first
    assert registry.list_audit().total == audit_total


def test_jit_race_between_two_threads_yields_one_device(
    registry: Registry, factory_ca: Issued, jit_fp: str
) -> None:
    cert = raw_leaf(factory_ca, "SN-RACE").certificate
    barrier = threading.Barrier(8)
    results: list[object] = []
    errors: list[BaseException] = []

    def connect() -> None:
        barrier.wait(timeout=10)
        try:
            results.append(
                registry.register_device_just_in_time(
                    cert, device_serial="SN-RACE", issuer_fingerprint=jit_fp
                )
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=connect) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(results) == 8 and all(r == results[0] for r in results)
    assert registry.list_devices().total == 1
    assert registry.list_certificates().total == 1
    assert [e.action for e in registry.list_audit().items].count("device.register_jit") == 1


def test_jit_with_two_registries_on_one_file(
    db_url: str, registry: Registry, factory_ca: Issued, jit_fp: str
) -> None:
    """Two processes' worth of engines (separate pools) racing on the same SQLite file."""
    cert = raw_leaf(factory_ca, "SN-2").certificate
    other = Registry.open(db_url)
    try:
        barrier = threading.Barrier(2)
        out: list[object] = []

        def go(reg: Registry) -> None:
            barrier.wait(timeout=10)
            out.append(
                reg.register_device_just_in_time(
                    cert, device_serial="SN-2", issuer_fingerprint=jit_fp
                )
            )

        threads = [threading.Thread(target=go, args=(r,)) for r in (registry, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert len(out) == 2 and out[0] == out[1]
    finally:
        other.close()
    assert registry.list_devices().total == 1


def test_jit_attaches_to_existing_device_keeping_its_status(
    registry: Registry, factory_ca: Issued, jit_fp: str
) -> None:
    registry.add_device("SN-1", provisioning=Provisioning.FACTORY, actor="a")
    registry.set_device_status("SN-1", DeviceStatus.DISABLED, actor="a")
    # JIT only creates devices: a pre-registered one must be bound to the CA explicitly.
    with pytest.raises(SerialBoundError):
        registry.register_device_just_in_time(
            raw_leaf(factory_ca, "SN-1").certificate,
            device_serial="SN-1",
            issuer_fingerprint=jit_fp,
        )
    registry.rebind_device("SN-1", ca_fingerprint=jit_fp, actor="a")
    device, record = registry.register_device_just_in_time(
        raw_leaf(factory_ca, "SN-1").certificate, device_serial="SN-1", issuer_fingerprint=jit_fp
    )
    assert device.status is DeviceStatus.DISABLED
    assert device.provisioning is Provisioning.FACTORY
    assert record.device_serial == "SN-1"
    assert registry.list_audit().items[0].details["device_created"] is False


def test_jit_refusals_change_nothing(
    registry: Registry,
    factory_ca: Issued,
    device_ca: Issued,
    jit_fp: str,
    snapshot: Snapshot,
) -> None:
    strict_fp = registry.register_ca(
        device_ca.certificate, role=CARole.DEVICE, actor="a"
    ).fingerprint
    taken = raw_leaf(factory_ca, "SN-1").certificate
    registry.register_device_just_in_time(taken, device_serial="SN-1", issuer_fingerprint=jit_fp)
    before = snapshot()
    with pytest.raises(AutoRegistrationPolicyError):
        registry.register_device_just_in_time(
            raw_leaf(device_ca, "SN-2").certificate,
            device_serial="SN-2",
            issuer_fingerprint=strict_fp,
        )
    with pytest.raises(CANotRegisteredError):
        registry.register_device_just_in_time(
            raw_leaf(factory_ca, "SN-2").certificate,
            device_serial="SN-2",
            issuer_fingerprint="ab" * 32,
        )
    with pytest.raises(CertificateIssuerMismatchError):
        registry.register_device_just_in_time(
            raw_leaf(device_ca, "SN-2").certificate, device_serial="SN-2", issuer_fingerprint=jit_fp
        )
    with pytest.raises(CertificateExistsError):
        registry.register_device_just_in_time(
            taken, device_serial="SN-3", issuer_fingerprint=jit_fp
        )
    assert snapshot() == before
    registry.set_ca_status(jit_fp, CAStatus.INACTIVE, actor="a")
    before = snapshot()
    with pytest.raises(CAStateError):
        registry.register_device_just_in_time(
            raw_leaf(factory_ca, "SN-2").certificate,
            device_serial="SN-2",
            issuer_fingerprint=jit_fp,
        )
    assert snapshot() == before
