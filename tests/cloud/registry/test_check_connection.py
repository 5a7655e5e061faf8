"""check_connection: one query answers the gateway, with a stable reason code for each case."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from sqlalchemy import event

from tests.support.pki import Issued, raw_leaf
from tether.cloud.registry import (
    CARole,
    CAStatus,
    CertState,
    ConnectionVerdict,
    DeviceStatus,
    InvalidRegistryInputError,
    Provisioning,
    Registry,
    VerdictCode,
    certificate_fingerprint,
)


class World:
    """A registry with a strict device CA, a JIT factory CA and a registered device d1."""

    def __init__(self, registry: Registry, device_ca: Issued, factory_ca: Issued) -> None:
        self.reg = registry
        self.ca = device_ca
        self.factory = factory_ca
        self.ca_fp = registry.register_ca(
            device_ca.certificate, role=CARole.DEVICE, actor="a"
        ).fingerprint
        self.jit_fp = registry.register_ca(
            factory_ca.certificate, role=CARole.FACTORY, allow_auto_registration=True, actor="a"
        ).fingerprint
        registry.add_device("d1", provisioning=Provisioning.CONSOLE, actor="a")
        self.cert = raw_leaf(device_ca, "d1").certificate
        self.fp = registry.add_certificate(
            self.cert, device_serial="d1", issuer_fingerprint=self.ca_fp, actor="a"
        ).fingerprint

    def check(
        self, fp: str | None = None, serial: str = "d1", issuer: str | None = None
    ) -> ConnectionVerdict:
        return self.reg.check_connection(
            cert_fingerprint=fp or self.fp,
            device_serial=serial,
            issuer_fingerprint=issuer or self.ca_fp,
        )


@pytest.fixture
def world(registry: Registry, device_ca: Issued, factory_ca: Issued) -> World:
    return World(registry, device_ca, factory_ca)


def _is(verdict: ConnectionVerdict, code: VerdictCode, allowed: bool) -> None:
    assert (verdict.reason_code, verdict.allowed) == (code, allowed), verdict
    assert verdict.reason  # a human explanation is always there


def test_ok(world: World) -> None:
    verdict = world.check()
    _is(verdict, VerdictCode.OK, True)
    assert verdict.reason_code == "ok"  # the codes are plain strings too


def test_ca_not_registered(world: World) -> None:
    _is(world.check(issuer="ab" * 32), VerdictCode.CA_NOT_REGISTERED, False)


@pytest.mark.parametrize("status", [CAStatus.INACTIVE, CAStatus.REVOKED])
def test_ca_inactive(world: World, status: CAStatus) -> None:
    world.reg.set_ca_status(world.ca_fp, status, actor="a")
    _is(world.check(), VerdictCode.CA_INACTIVE, False)


def test_certificate_revoked(world: World) -> None:
    world.reg.revoke_certificate(world.fp, reason=x509.ReasonFlags.key_compromise, actor="a")
    _is(world.check(), VerdictCode.CERTIFICATE_REVOKED, False)


@pytest.mark.parametrize("state", [CertState.INACTIVE, CertState.PENDING])
def test_certificate_inactive(world: World, state: CertState) -> None:
    world.reg.set_certificate_state(world.fp, state, actor="a")
    _is(world.check(), VerdictCode.CERTIFICATE_INACTIVE, False)


def test_certificate_unknown_under_a_strict_ca(world: World) -> None:
    stranger = certificate_fingerprint(raw_leaf(world.ca, "d1").certificate)
    _is(world.check(fp=stranger), VerdictCode.CERTIFICATE_UNKNOWN, False)


def test_certificate_known_under_another_issuer_is_refused(world: World) -> None:
    # d1 belongs to the device CA: no other CA can vouch for it, known certificate or not.
    _is(world.check(issuer=world.jit_fp), VerdictCode.SERIAL_BOUND_TO_OTHER_CA, False)


def test_jit_never_takes_over_an_existing_device(world: World) -> None:
    # A factory CA that allows JIT presents a fresh certificate for the console device d1.
    fp = certificate_fingerprint(raw_leaf(world.factory, "d1").certificate)
    _is(world.check(fp=fp, issuer=world.jit_fp), VerdictCode.SERIAL_BOUND_TO_OTHER_CA, False)


def test_device_disabled(world: World) -> None:
    world.reg.set_device_status("d1", DeviceStatus.DISABLED, actor="a")
    _is(world.check(), VerdictCode.DEVICE_DISABLED, False)


def test_device_unknown(world: World) -> None:
    unbound = world.reg.add_certificate(
        raw_leaf(world.ca, "d9").certificate,
        device_serial=None,
        issuer_fingerprint=world.ca_fp,
        actor="a",
    )
    _is(world.check(fp=unbound.fingerprint, serial="d9"), VerdictCode.DEVICE_UNKNOWN, False)


def test_device_mismatch(world: World) -> None:
    world.reg.add_device("d2", provisioning=Provisioning.CONSOLE, actor="a")
    _is(world.check(serial="d2"), VerdictCode.DEVICE_MISMATCH, False)
    unbound = world.reg.add_certificate(
        raw_leaf(world.ca, "d2").certificate,
        device_serial=None,
        issuer_fingerprint=world.ca_fp,
        actor="a",
    )
    _is(world.check(fp=unbound.fingerprint, serial="d2"), VerdictCode.DEVICE_MISMATCH, False)


def test_jit_allowed_then_ok_after_registration(world: World) -> None:
    cert = raw_leaf(world.factory, "new-1").certificate
    fp = certificate_fingerprint(cert)
    _is(world.check(fp=fp, serial="new-1", issuer=world.jit_fp), VerdictCode.JIT_ALLOWED, True)
    world.reg.register_device_just_in_time(
        cert, device_serial="new-1", issuer_fingerprint=world.jit_fp
    )
    _is(world.check(fp=fp, serial="new-1", issuer=world.jit_fp), VerdictCode.OK, True)


def test_jit_refused_for_a_disabled_device(world: World) -> None:
    world.reg.rebind_device("d1", ca_fingerprint=world.jit_fp, actor="a")
    world.reg.set_device_status("d1", DeviceStatus.DISABLED, actor="a")
    fp = certificate_fingerprint(raw_leaf(world.factory, "d1").certificate)
    _is(world.check(fp=fp, issuer=world.jit_fp), VerdictCode.DEVICE_DISABLED, False)


def test_check_connection_is_one_select(world: World) -> None:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.strip().split()[0].upper())

    event.listen(world.reg._engine, "before_cursor_execute", record)
    try:
        world.check()
    finally:
        event.remove(world.reg._engine, "before_cursor_execute", record)
    assert statements.count("SELECT") == 1
    assert not {"INSERT", "UPDATE", "DELETE"} & set(statements)


def test_malformed_input_is_refused(world: World) -> None:
    with pytest.raises(InvalidRegistryInputError):
        world.check(fp="nope")
    with pytest.raises(InvalidRegistryInputError):
        world.check(serial="bad serial")
