"""Certificates: add, look up, list, state changes, revocation and CRL input."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography import x509

from tests.support.pki import Issued, raw_leaf
from tether.cloud.registry import (
    CANotRegisteredError,
    CARole,
    CertificateExistsError,
    CertificateIssuerMismatchError,
    CertificateNotFoundError,
    CertificateStateError,
    CertState,
    DeviceNotFoundError,
    InvalidRegistryInputError,
    Provisioning,
    Registry,
    SerialBoundError,
    certificate_fingerprint,
    device_serial_from_certificate,
)
from tether.errors import ConflictError, InvalidInputError, NotFoundError

Snapshot = Callable[[], dict[str, list[tuple[object, ...]]]]


@pytest.fixture
def ca_fp(registry: Registry, device_ca: Issued) -> str:
    return registry.register_ca(device_ca.certificate, role=CARole.DEVICE, actor="a").fingerprint


def _add(registry: Registry, ca: Issued, ca_fp: str, serial: str, **kw: object) -> x509.Certificate:
    registry.add_device(serial, provisioning=Provisioning.CONSOLE, actor="a")
    cert = raw_leaf(ca, serial, **kw).certificate  # type: ignore[arg-type]
    registry.add_certificate(cert, device_serial=serial, issuer_fingerprint=ca_fp, actor="a")
    return cert


def test_add_certificate_records_everything(
    registry: Registry, device_ca: Issued, ca_fp: str
) -> None:
    registry.add_device("d1", provisioning=Provisioning.CSR, actor="a")
    cert = raw_leaf(device_ca, "d1", serial_number=0x00ABCDEF).certificate
    record = registry.add_certificate(
        cert, device_serial="d1", issuer_fingerprint=ca_fp, actor="api:alice"
    )
    assert record.fingerprint == certificate_fingerprint(cert)
    assert record.serial_number == "abcdef" and record.serial_int == 0xABCDEF
    assert record.issuer_fingerprint == ca_fp and record.device_serial == "d1"
    assert record.state is CertState.ACTIVE and record.revocation_reason is None
    assert record.not_before == cert.not_valid_before_utc
    assert record.not_after == cert.not_valid_after_utc
    assert record.certificate() == cert
    assert registry.get_certificate(record.fingerprint) == record
    entry = registry.list_audit().items[0]
    assert (entry.action, entry.target, entry.actor) == (
        "certificate.add",
        record.fingerprint,
        "api:alice",
    )
    assert entry.details["device"] == "d1" and entry.details["serial_number"] == "abcdef"


def test_add_certificate_pending_and_without_device(
    registry: Registry, device_ca: Issued, ca_fp: str
) -> None:
    record = registry.add_certificate(
        raw_leaf(device_ca, "svc").certificate,
        device_serial=None,
        issuer_fingerprint=ca_fp,
        state=CertState.PENDING,
        actor="a",
    )
    assert record.device_serial is None and record.state is CertState.PENDING


def test_same_certificate_twice_is_a_conflict(
    registry: Registry, device_ca: Issued, ca_fp: str, snapshot: Snapshot
) -> None:
    cert = _add(registry, device_ca, ca_fp, "d1")
    before = snapshot()
    with pytest.raises(CertificateExistsError) as info:
        registry.add_certificate(cert, device_serial="d1", issuer_fingerprint=ca_fp, actor="a")
    assert isinstance(info.value, ConflictError) and info.value.code == "certificate_exists"
    assert snapshot() == before


def test_serial_numbers_are_unique_per_issuer(
    registry: Registry, device_ca: Issued, factory_ca: Issued, ca_fp: str, snapshot: Snapshot
) -> None:
    _add(registry, device_ca, ca_fp, "d1", serial_number=4242)
    registry.add_device("d2", provisioning=Provisioning.CONSOLE, actor="a")
    twin = raw_leaf(device_ca, "d2", serial_number=4242).certificate
    before = snapshot()
    with pytest.raises(CertificateExistsError, match="serial number 1092"):
        registry.add_certificate(twin, device_serial="d2", issuer_fingerprint=ca_fp, actor="a")
    assert snapshot() == before
    # The database refuses it too, whatever the application checks.
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(registry._engine.url.database or "")) as conn:
        row = conn.execute(
            "SELECT issuer_id, subject, not_before, not_after, pem, created_at, updated_at "
            "FROM certificates"
        ).fetchone()
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            conn.execute(
                "INSERT INTO certificates (fingerprint, serial_number, issuer_id, subject, "
                "not_before, not_after, state, pem, created_at, updated_at) "
                "VALUES (?, '1092', ?, ?, ?, ?, 'active', ?, ?, ?)",
                ("f" * 64, *row),
            )
    # Another issuer may use the same serial number (RFC 5280: unique per issuer).
    factory_fp = registry.register_ca(
        factory_ca.certificate, role=CARole.FACTORY, actor="a"
    ).fingerprint
    other = registry.add_certificate(
        raw_leaf(factory_ca, "d2", serial_number=4242).certificate,
        device_serial="d2",
        issuer_fingerprint=factory_fp,
        actor="a",
    )
    assert other.serial_number == "1092"


def test_add_certificate_refusals_change_nothing(
    registry: Registry, device_ca: Issued, factory_ca: Issued, ca_fp: str, snapshot: Snapshot
) -> None:
    registry.add_device("d1", provisioning=Provisioning.CONSOLE, actor="a")
    cert = raw_leaf(device_ca, "d1").certificate
    before = snapshot()
    with pytest.raises(CANotRegisteredError):
        registry.add_certificate(cert, device_serial="d1", issuer_fingerprint="ab" * 32, actor="a")
    with pytest.raises(DeviceNotFoundError):
        registry.add_certificate(cert, device_serial="d9", issuer_fingerprint=ca_fp, actor="a")
    with pytest.raises(CertificateIssuerMismatchError) as info:
        registry.add_certificate(
            raw_leaf(factory_ca, "d1").certificate,
            device_serial="d1",
            issuer_fingerprint=ca_fp,
            actor="a",
        )
    assert isinstance(info.value, InvalidInputError)
    with pytest.raises(InvalidRegistryInputError):
        registry.add_certificate(
            cert, device_serial="d1", issuer_fingerprint=ca_fp, state=CertState.REVOKED, actor="a"
        )
    assert snapshot() == before


def test_get_unknown_certificate_is_not_found(registry: Registry) -> None:
    with pytest.raises(CertificateNotFoundError) as info:
        registry.get_certificate("cd" * 32)
    assert isinstance(info.value, NotFoundError) and info.value.code == "certificate_not_found"


def test_list_certificates_filters_and_pages(
    registry: Registry, device_ca: Issued, factory_ca: Issued, ca_fp: str
) -> None:
    certs = [_add(registry, device_ca, ca_fp, f"d{i}") for i in range(5)]
    extra = raw_leaf(device_ca, "d0").certificate
    registry.add_certificate(extra, device_serial="d0", issuer_fingerprint=ca_fp, actor="a")
    factory_fp = registry.register_ca(
        factory_ca.certificate, role=CARole.FACTORY, actor="a"
    ).fingerprint
    _add(registry, factory_ca, factory_fp, "f1")

    page = registry.list_certificates(limit=4)
    assert (len(page.items), page.total, page.next_offset) == (4, 7, 4)
    assert page.items[0].fingerprint == certificate_fingerprint(certs[0])
    rest = registry.list_certificates(offset=4, limit=4)
    assert (len(rest.items), rest.next_offset) == (3, None)
    mine = registry.list_certificates(device_serial="d0")
    assert [c.fingerprint for c in mine.items] == [
        certificate_fingerprint(certs[0]),
        certificate_fingerprint(extra),
    ]
    assert registry.list_certificates(issuer_fingerprint=factory_fp).total == 1
    assert registry.list_certificates(issuer_fingerprint=ca_fp, device_serial="d1").total == 1
    assert registry.list_certificates(device_serial="nobody").total == 0


def test_revoke_certificate(registry: Registry, device_ca: Issued, ca_fp: str) -> None:
    fp = certificate_fingerprint(_add(registry, device_ca, ca_fp, "d1"))
    revoked = registry.revoke_certificate(
        fp, reason=x509.ReasonFlags.key_compromise, actor="security"
    )
    assert revoked.state is CertState.REVOKED
    assert revoked.revocation_reason is x509.ReasonFlags.key_compromise
    assert revoked.revoked_at is not None
    assert registry.get_certificate(fp) == revoked
    entry = registry.list_audit().items[0]
    assert (entry.action, entry.actor, entry.details["reason"]) == (
        "certificate.revoke",
        "security",
        "key_compromise",
    )


def test_revoke_unknown_is_not_found_and_changes_nothing(
    registry: Registry, device_ca: Issued, ca_fp: str, snapshot: Snapshot
) -> None:
    _add(registry, device_ca, ca_fp, "d1")
    before = snapshot()
    with pytest.raises(CertificateNotFoundError):
        registry.revoke_certificate("ee" * 32, reason=x509.ReasonFlags.superseded, actor="a")
    assert snapshot() == before


def test_revoke_twice_or_remove_from_crl_is_refused(
    registry: Registry, device_ca: Issued, ca_fp: str, snapshot: Snapshot
) -> None:
    fp = certificate_fingerprint(_add(registry, device_ca, ca_fp, "d1"))
    before = snapshot()
    with pytest.raises(InvalidRegistryInputError):
        registry.revoke_certificate(fp, reason=x509.ReasonFlags.remove_from_crl, actor="a")
    assert snapshot() == before
    registry.revoke_certificate(fp, reason=x509.ReasonFlags.superseded, actor="a")
    after_revoke = snapshot()
    with pytest.raises(CertificateStateError) as info:
        registry.revoke_certificate(fp, reason=x509.ReasonFlags.key_compromise, actor="a")
    assert info.value.code == "certificate_state_conflict"
    with pytest.raises(CertificateStateError):
        registry.set_certificate_state(fp, CertState.ACTIVE, actor="a")
    assert snapshot() == after_revoke
    assert registry.get_certificate(fp).revocation_reason is x509.ReasonFlags.superseded


def test_set_certificate_state(
    registry: Registry, device_ca: Issued, ca_fp: str, snapshot: Snapshot
) -> None:
    fp = certificate_fingerprint(_add(registry, device_ca, ca_fp, "d1"))
    assert registry.set_certificate_state(fp, CertState.INACTIVE, actor="a").state is (
        CertState.INACTIVE
    )
    entry = registry.list_audit().items[0]
    assert (entry.action, dict(entry.details)) == (
        "certificate.state",
        {"from": "active", "to": "inactive"},
    )
    before = snapshot()
    with pytest.raises(InvalidRegistryInputError):
        registry.set_certificate_state(fp, CertState.REVOKED, actor="a")
    registry.set_certificate_state(fp, CertState.INACTIVE, actor="a")  # no-op, no audit
    assert snapshot() == before


def test_revoked_certificates_for_crl(
    registry: Registry, device_ca: Issued, factory_ca: Issued, ca_fp: str
) -> None:
    certs = [_add(registry, device_ca, ca_fp, f"d{i}") for i in range(4)]
    factory_fp = registry.register_ca(
        factory_ca.certificate, role=CARole.FACTORY, actor="a"
    ).fingerprint
    foreign = _add(registry, factory_ca, factory_fp, "f0")
    for cert in (certs[2], certs[0], foreign):
        registry.revoke_certificate(
            certificate_fingerprint(cert), reason=x509.ReasonFlags.cessation_of_operation, actor="a"
        )
    crl = registry.revoked_certificates(ca_fp)
    assert [r.serial_int for r in crl] == [certs[2].serial_number, certs[0].serial_number]
    assert all(r.revoked_at is not None for r in crl)
    with pytest.raises(CANotRegisteredError):
        registry.revoked_certificates("ab" * 32)


def test_device_serial_fallback_from_subject_cn(device_ca: Issued) -> None:
    assert device_serial_from_certificate(raw_leaf(device_ca, "SN-77").certificate) == "SN-77"
    with pytest.raises(InvalidRegistryInputError):
        device_serial_from_certificate(raw_leaf(device_ca, "not a serial").certificate)


def test_a_serial_belongs_to_the_ca_that_first_vouched_for_it(
    registry: Registry, device_ca: Issued, factory_ca: Issued, ca_fp: str, snapshot: Snapshot
) -> None:
    _add(registry, device_ca, ca_fp, "d1")
    factory_fp = registry.register_ca(
        factory_ca.certificate, role=CARole.FACTORY, actor="a"
    ).fingerprint
    assert registry.get_device("d1").ca_fingerprint == ca_fp
    before = snapshot()
    with pytest.raises(SerialBoundError) as info:
        registry.add_certificate(
            raw_leaf(factory_ca, "d1").certificate,
            device_serial="d1",
            issuer_fingerprint=factory_fp,
            actor="a",
        )
    assert info.value.code == "serial_bound_to_other_ca"
    assert snapshot() == before
    # A renewal under the same CA is fine.
    renewal = raw_leaf(device_ca, "d1").certificate
    registry.add_certificate(renewal, device_serial="d1", issuer_fingerprint=ca_fp, actor="a")
    # Moving the device is explicit and audited; then the other CA may vouch for it.
    moved = registry.rebind_device("d1", ca_fingerprint=factory_fp, actor="security")
    assert moved.ca_fingerprint == factory_fp
    entry = registry.list_audit().items[0]
    assert (entry.action, entry.target, entry.details["from"], entry.details["to"]) == (
        "device.rebind", "d1", ca_fp, factory_fp,
    )  # fmt: skip
    registry.add_certificate(
        raw_leaf(factory_ca, "d1").certificate,
        device_serial="d1",
        issuer_fingerprint=factory_fp,
        actor="a",
    )
