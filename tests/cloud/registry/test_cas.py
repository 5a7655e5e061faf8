"""Registered CAs: register, look up, change status and auto-registration."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.pki import Issued, raw_ca, raw_leaf
from tether.cloud.registry import (
    AutoRegistrationPolicyError,
    CAExistsError,
    CANotRegisteredError,
    CARole,
    CAStateError,
    CAStatus,
    InvalidRegistryInputError,
    NotACAError,
    Registry,
    certificate_fingerprint,
)
from tether.errors import ConflictError, NotFoundError, PolicyViolationError

Snapshot = Callable[[], dict[str, list[tuple[object, ...]]]]


def test_register_ca_returns_a_record_and_audits(registry: Registry, device_ca: Issued) -> None:
    record = registry.register_ca(
        device_ca.certificate, role=CARole.DEVICE, allow_auto_registration=True, actor="alice"
    )
    assert record.fingerprint == certificate_fingerprint(device_ca.certificate)
    assert len(record.fingerprint) == 64 and record.fingerprint == record.fingerprint.lower()
    assert record.role is CARole.DEVICE and record.status is CAStatus.ACTIVE
    assert record.allow_auto_registration is True
    assert record.subject == "CN=Test Device CA"
    assert record.not_after == device_ca.certificate.not_valid_after_utc
    assert record.certificate().public_bytes(Encoding.DER) == device_ca.certificate.public_bytes(
        Encoding.DER
    )
    assert registry.get_ca(record.fingerprint) == record
    [entry] = registry.list_audit().items
    assert (entry.actor, entry.action, entry.target) == ("alice", "ca.register", record.fingerprint)
    assert entry.details["role"] == "device"
    with pytest.raises(AttributeError):
        record.status = CAStatus.REVOKED  # type: ignore[misc]


def test_register_ca_twice_is_a_conflict_and_changes_nothing(
    registry: Registry, device_ca: Issued, snapshot: Snapshot
) -> None:
    registry.register_ca(device_ca.certificate, role=CARole.DEVICE, actor="alice")
    before = snapshot()
    with pytest.raises(CAExistsError) as info:
        registry.register_ca(device_ca.certificate, role=CARole.FACTORY, actor="alice")
    assert isinstance(info.value, ConflictError) and info.value.code == "ca_exists"
    assert snapshot() == before


def test_a_leaf_is_not_a_ca(registry: Registry, device_ca: Issued, snapshot: Snapshot) -> None:
    before = snapshot()
    with pytest.raises(NotACAError) as info:
        registry.register_ca(
            raw_leaf(device_ca, "dev-1").certificate, role=CARole.DEVICE, actor="alice"
        )
    assert isinstance(info.value, PolicyViolationError)
    assert info.value.code == "not_a_ca_certificate"
    assert snapshot() == before


def test_server_ca_cannot_allow_auto_registration(
    registry: Registry, root_ca: Issued, snapshot: Snapshot
) -> None:
    server_ca = raw_ca("Test Server CA", root_ca)
    before = snapshot()
    with pytest.raises(AutoRegistrationPolicyError):
        registry.register_ca(
            server_ca.certificate, role=CARole.SERVER, allow_auto_registration=True, actor="alice"
        )
    assert snapshot() == before
    server = registry.register_ca(server_ca.certificate, role=CARole.SERVER, actor="alice")
    with pytest.raises(AutoRegistrationPolicyError) as info:
        registry.set_ca_auto_registration(server.fingerprint, True, actor="alice")
    assert info.value.code == "auto_registration_not_allowed"
    assert registry.get_ca(server.fingerprint).allow_auto_registration is False


def test_get_unknown_ca_is_not_found(registry: Registry) -> None:
    with pytest.raises(CANotRegisteredError) as info:
        registry.get_ca("ab" * 32)
    assert isinstance(info.value, NotFoundError) and info.value.code == "ca_not_registered"


@pytest.mark.parametrize("bad", ["", "xyz", "ab" * 31, "zz" * 32, "ab" * 33])
def test_malformed_fingerprint_is_invalid_input(registry: Registry, bad: str) -> None:
    with pytest.raises(InvalidRegistryInputError) as info:
        registry.get_ca(bad)
    assert info.value.code == "invalid_registry_input"


def test_fingerprint_accepts_colons_and_upper_case(registry: Registry, device_ca: Issued) -> None:
    fp = registry.register_ca(device_ca.certificate, role=CARole.DEVICE, actor="a").fingerprint
    pretty = ":".join(fp[i : i + 2] for i in range(0, 64, 2)).upper()
    assert registry.get_ca(pretty).fingerprint == fp


def test_find_ca_by_subject_key_id(
    registry: Registry, device_ca: Issued, factory_ca: Issued
) -> None:
    registry.register_ca(device_ca.certificate, role=CARole.DEVICE, actor="a")
    factory = registry.register_ca(factory_ca.certificate, role=CARole.FACTORY, actor="a")
    ski = factory_ca.certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value.digest
    assert registry.find_ca_by_subject_key_id(ski) == factory
    assert registry.find_ca_by_subject_key_id(b"\x00" * 20) is None


def test_list_cas_filters_by_status(
    registry: Registry, device_ca: Issued, factory_ca: Issued
) -> None:
    a = registry.register_ca(device_ca.certificate, role=CARole.DEVICE, actor="a")
    b = registry.register_ca(factory_ca.certificate, role=CARole.FACTORY, actor="a")
    registry.set_ca_status(b.fingerprint, CAStatus.INACTIVE, actor="a")
    assert [c.fingerprint for c in registry.list_cas()] == [a.fingerprint, b.fingerprint]
    assert [c.fingerprint for c in registry.list_cas(status=CAStatus.ACTIVE)] == [a.fingerprint]
    assert [c.fingerprint for c in registry.list_cas(status=CAStatus.INACTIVE)] == [b.fingerprint]


def test_set_ca_status_audits_and_revocation_is_final(
    registry: Registry, device_ca: Issued, snapshot: Snapshot
) -> None:
    fp = registry.register_ca(device_ca.certificate, role=CARole.DEVICE, actor="a").fingerprint
    assert registry.set_ca_status(fp, CAStatus.INACTIVE, actor="bob").status is CAStatus.INACTIVE
    assert registry.set_ca_status(fp, CAStatus.REVOKED, actor="bob").status is CAStatus.REVOKED
    entries = registry.list_audit(target=fp).items  # newest first
    assert [e.action for e in entries] == ["ca.status", "ca.status", "ca.register"]
    assert [e.details.get("to") for e in entries[:2]] == ["revoked", "inactive"]
    assert entries[0].actor == "bob"
    # The same status again is a no-op: no audit row.
    total = registry.list_audit().total
    registry.set_ca_status(fp, CAStatus.REVOKED, actor="bob")
    assert registry.list_audit().total == total
    before = snapshot()
    with pytest.raises(CAStateError) as info:
        registry.set_ca_status(fp, CAStatus.ACTIVE, actor="bob")
    assert info.value.code == "ca_state_conflict"
    assert snapshot() == before


def test_set_status_of_unknown_ca_is_not_found(registry: Registry, snapshot: Snapshot) -> None:
    before = snapshot()
    with pytest.raises(CANotRegisteredError):
        registry.set_ca_status("ab" * 32, CAStatus.INACTIVE, actor="a")
    assert snapshot() == before


def test_set_ca_auto_registration(registry: Registry, factory_ca: Issued) -> None:
    fp = registry.register_ca(factory_ca.certificate, role=CARole.FACTORY, actor="a").fingerprint
    assert registry.set_ca_auto_registration(fp, True, actor="a").allow_auto_registration
    [entry] = [
        e for e in registry.list_audit(target=fp).items if e.action == "ca.auto_registration"
    ]
    assert entry.details == {"allow": True}


def test_empty_actor_is_refused(registry: Registry, device_ca: Issued, snapshot: Snapshot) -> None:
    before = snapshot()
    for actor in ("", "   ", "x" * 201):
        with pytest.raises(InvalidRegistryInputError):
            registry.register_ca(device_ca.certificate, role=CARole.DEVICE, actor=actor)
    assert snapshot() == before
