"""Registry additions for the admin API: atomic provisioning, registration codes, admins, CRLs."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.pki import Issued, raw_leaf
from tether.cloud.registry import (
    ROOT_CRL_ISSUER,
    AdminExistsError,
    CAExistsError,
    CANotRegisteredError,
    CARole,
    CertificateExistsError,
    CertificateIssuerMismatchError,
    DeviceExistsError,
    InvalidRegistryInputError,
    Provisioning,
    RegistrationCodeError,
    Registry,
    certificate_fingerprint,
)

ACTOR = "alice"
Snapshot = Callable[[], dict[str, list[tuple[object, ...]]]]


def _rows(db_path: Path, table: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(db_path)) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()  # noqa: S608


def test_provision_device_is_all_or_nothing(
    registry: Registry, device_ca: Issued, factory_ca: Issued, snapshot: Snapshot
) -> None:
    issuer = certificate_fingerprint(device_ca.certificate)
    registry.register_ca(device_ca.certificate, role=CARole.DEVICE, actor=ACTOR)
    cert = raw_leaf(device_ca, "PRV-1", serial_number=77).certificate
    device, record = registry.provision_device(
        "PRV-1", cert, issuer_fingerprint=issuer, provisioning=Provisioning.CONSOLE, actor=ACTOR
    )
    assert device.provisioning is Provisioning.CONSOLE and record.device_serial == "PRV-1"
    assert [e.action for e in registry.list_audit().items] == [
        "certificate.add",
        "device.add",
        "ca.register",
    ]
    before = snapshot()
    refusals: list[tuple[Exception | type[Exception], Callable[[], object]]] = [
        (DeviceExistsError, lambda: registry.provision_device(
            "PRV-1", raw_leaf(device_ca, "PRV-1").certificate, issuer_fingerprint=issuer,
            provisioning=Provisioning.CONSOLE, actor=ACTOR)),
        (CertificateExistsError, lambda: registry.provision_device(
            "PRV-2", raw_leaf(device_ca, "PRV-2", serial_number=77).certificate,
            issuer_fingerprint=issuer, provisioning=Provisioning.CSR, actor=ACTOR)),
        (CertificateIssuerMismatchError, lambda: registry.provision_device(
            "PRV-3", raw_leaf(factory_ca, "PRV-3").certificate, issuer_fingerprint=issuer,
            provisioning=Provisioning.CSR, actor=ACTOR)),
    ]  # fmt: skip
    for error, call in refusals:
        with pytest.raises(error):  # type: ignore[call-overload]
            call()
        assert snapshot() == before


def test_registration_codes_are_single_use_and_expire(
    registry: Registry, db_path: Path, device_ca: Issued, factory_ca: Issued
) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=5)
    registry.create_registration_code("code-1", expires_at=soon, actor=ACTOR)
    registry.create_registration_code("code-2", expires_at=soon, actor=ACTOR)
    with pytest.raises(InvalidRegistryInputError):
        registry.create_registration_code("bad code", expires_at=soon, actor=ACTOR)
    with pytest.raises(RegistrationCodeError, match="Unknown"):
        registry.register_ca_with_code(
            device_ca.certificate, code="code-9", role=CARole.DEVICE, actor=ACTOR
        )
    record = registry.register_ca_with_code(
        device_ca.certificate, code="code-1", role=CARole.DEVICE, actor=ACTOR
    )
    assert record.role is CARole.DEVICE
    with pytest.raises(RegistrationCodeError, match="already used"):
        registry.register_ca_with_code(
            factory_ca.certificate, code="code-1", role=CARole.FACTORY, actor=ACTOR
        )
    # A refused registration leaves its code unspent.
    with pytest.raises(CAExistsError):
        registry.register_ca_with_code(
            device_ca.certificate, code="code-2", role=CARole.DEVICE, actor=ACTOR
        )
    used = {row[1]: row[5] for row in _rows(db_path, "registration_codes")}
    assert used["code-1"] is not None and used["code-2"] is None
    registry._clock = lambda: soon + timedelta(seconds=1)  # type: ignore[method-assign]
    with pytest.raises(RegistrationCodeError, match="expired"):
        registry.register_ca_with_code(
            factory_ca.certificate, code="code-2", role=CARole.FACTORY, actor=ACTOR
        )


def test_admins_are_unique_and_found_by_token_id(registry: Registry) -> None:
    registry.add_admin(
        "alice", token_id="a" * 16, salt=b"s" * 16, token_hash=b"h" * 32, actor=ACTOR
    )
    with pytest.raises(AdminExistsError):
        registry.add_admin(
            "alice", token_id="b" * 16, salt=b"s" * 16, token_hash=b"h" * 32, actor=ACTOR
        )
    with pytest.raises(InvalidRegistryInputError):
        registry.add_admin(
            "Not OK", token_id="c" * 16, salt=b"s" * 16, token_hash=b"h" * 32, actor=ACTOR
        )
    found = registry.find_admin("a" * 16)
    assert found is not None and found.name == "alice"
    assert registry.find_admin("b" * 16) is None
    assert [a.name for a in registry.list_admins()] == ["alice"]
    assert registry.list_audit().items[0].action == "admin.add"


def test_published_crls_are_replaced_and_audited(registry: Registry, device_ca: Issued) -> None:
    assert registry.published_crl(ROOT_CRL_ISSUER) is None
    registry.publish_crl(ROOT_CRL_ISSUER, b"first", actor=ACTOR)
    registry.publish_crl(ROOT_CRL_ISSUER, b"second", actor=ACTOR)
    assert registry.published_crl(ROOT_CRL_ISSUER) == b"second"
    with pytest.raises(CANotRegisteredError):
        registry.publish_crl(certificate_fingerprint(device_ca.certificate), b"x", actor=ACTOR)
    assert [e.action for e in registry.list_audit().items] == ["crl.publish", "crl.publish"]
