"""The policy aggregate: versions, attachments, groups, attributes, refusals and audit rows."""

from __future__ import annotations

import pytest

from tests.support.pki import Issued
from tether.cloud.policy.admin import PolicyAdmin, ReservedPolicyNameError
from tether.cloud.policy.document import InvalidPolicyError
from tether.cloud.registry import (
    AuditAction,
    CARole,
    DeviceNotFoundError,
    InvalidRegistryInputError,
    Provisioning,
    Registry,
)
from tether.cloud.registry.policies import (
    AttachmentNotFoundError,
    PolicyInUseError,
    PolicyNotFoundError,
    TargetKind,
)
from tether.pki import sha256_fingerprint

DOC = {"statements": [{"sid": "t", "effect": "allow", "actions": ["publish"], "resources": ["a"]}]}
DOC2 = {"statements": [{"sid": "t", "effect": "deny", "actions": ["publish"], "resources": ["a"]}]}


class Ops(PolicyAdmin):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry


def _actions(registry: Registry) -> list[str]:
    return [e.action for e in reversed(registry.list_audit(limit=100).items)]


def test_versions_are_kept_and_the_same_document_changes_nothing(registry: Registry) -> None:
    ops = Ops(registry)
    first = ops.put_policy("fleet", DOC, actor="alice")
    assert (first.version, first.current_version) == (1, 1)
    assert ops.put_policy("fleet", DOC, actor="alice").version == 1
    second = ops.put_policy("fleet", DOC2, actor="bob")
    assert (second.version, second.created_by) == (2, "bob")
    assert registry.get_policy("fleet", version=1).sha256 == first.sha256
    assert registry.get_policy("fleet").version == 2
    assert [p.name for p in registry.list_policies()] == ["fleet"]
    assert _actions(registry) == [AuditAction.POLICY_PUT, AuditAction.POLICY_PUT]
    entry = registry.list_audit(limit=1).items[0]
    assert entry.details == {"version": 2, "sha256": second.sha256}


def test_invalid_and_reserved_documents_change_nothing(registry: Registry) -> None:
    ops = Ops(registry)
    bad = {"statements": [{"sid": "oops", "effect": "allow", "actions": ["publish"]}]}
    with pytest.raises(InvalidPolicyError, match='statement "oops"'):
        ops.put_policy("fleet", bad, actor="alice")
    for reserved in ("builtin:device", "schema", "test"):
        with pytest.raises(ReservedPolicyNameError):
            ops.put_policy(reserved, DOC, actor="alice")
    with pytest.raises(InvalidRegistryInputError):
        ops.put_policy("no spaces", DOC, actor="alice")
    assert registry.list_policies() == [] and _actions(registry) == []


def test_attachments_to_every_kind_of_target(registry: Registry, device_ca: Issued) -> None:
    ops = Ops(registry)
    ops.put_policy("fleet", DOC, actor="alice")
    registry.add_device("SN1", provisioning=Provisioning.CONSOLE, actor="alice")
    registry.register_ca(device_ca.certificate, role=CARole.DEVICE, actor="alice")
    fingerprint = sha256_fingerprint(device_ca.certificate)
    for kind, target in [
        (TargetKind.DEVICE, "SN1"),
        (TargetKind.GROUP, "line-7"),
        (TargetKind.CA, fingerprint.upper()),
        (TargetKind.SERVICE, "ingest"),
    ]:
        ops.attach_policy("fleet", kind, target, actor="alice")
    ops.attach_policy("fleet", TargetKind.DEVICE, "SN1", actor="alice")  # again: no change
    attached = {(a.kind, a.target) for a in registry.list_attachments(policy="fleet")}
    assert (TargetKind.CA, fingerprint) in attached and len(attached) == 4
    assert _actions(registry).count(AuditAction.POLICY_ATTACH) == 4
    with pytest.raises(PolicyInUseError):
        ops.delete_policy("fleet", actor="alice")
    with pytest.raises(DeviceNotFoundError):
        ops.attach_policy("fleet", TargetKind.DEVICE, "SN404", actor="alice")
    with pytest.raises(PolicyNotFoundError):
        ops.attach_policy("nope", TargetKind.GROUP, "g", actor="alice")
    with pytest.raises(InvalidRegistryInputError):
        ops.attach_policy("fleet", "thing", "x", actor="alice")  # type: ignore[arg-type]
    for kind, target in attached:
        ops.detach_policy("fleet", kind, target, actor="alice")
    with pytest.raises(AttachmentNotFoundError):
        ops.detach_policy("fleet", TargetKind.GROUP, "line-7", actor="alice")
    ops.delete_policy("fleet", actor="alice")
    with pytest.raises(PolicyNotFoundError):
        registry.get_policy("fleet")
    assert _actions(registry)[-1] == AuditAction.POLICY_DELETE


def test_groups_and_attributes_are_validated_audited_and_in_the_snapshot(
    registry: Registry,
) -> None:
    ops = Ops(registry)
    registry.add_device("SN1", provisioning=Provisioning.CONSOLE, actor="alice")
    registry.add_device("SN2", provisioning=Provisioning.CONSOLE, actor="alice")
    assert ops.add_device_group("SN1", "line-7", actor="alice") == ("line-7",)
    assert ops.add_device_group("SN1", "line-7", actor="alice") == ("line-7",)
    assert ops.add_device_group("SN1", "beta", actor="alice") == ("beta", "line-7")
    assert ops.set_device_attribute("SN1", "model", "X2", actor="alice") == {"model": "X2"}
    assert ops.set_device_attribute("SN1", "model", "X2", actor="alice") == {"model": "X2"}
    for bad in ("a/b", "+", "#", "$x", ""):
        with pytest.raises(InvalidRegistryInputError):
            ops.set_device_attribute("SN1", "model", bad, actor="alice")
        with pytest.raises(InvalidRegistryInputError):
            ops.add_device_group("SN1", bad, actor="alice")
    with pytest.raises(InvalidRegistryInputError):
        ops.set_device_attribute("SN1", "Model", "x", actor="alice")
    with pytest.raises(DeviceNotFoundError):
        ops.add_device_group("SN404", "g", actor="alice")
    snapshot = registry.policy_snapshot()
    assert snapshot.groups == {"SN1": ("beta", "line-7")}
    assert snapshot.attributes == {"SN1": (("model", "X2"),)}
    assert registry.policy_snapshot(serial="SN2").groups == {}
    assert ops.remove_device_group("SN1", "beta", actor="alice") == ("line-7",)
    assert ops.set_device_attribute("SN1", "model", None, actor="alice") == {}
    assert _actions(registry)[2:] == [
        AuditAction.DEVICE_GROUP_ADD,
        AuditAction.DEVICE_GROUP_ADD,
        AuditAction.DEVICE_ATTRIBUTE,
        AuditAction.DEVICE_GROUP_REMOVE,
        AuditAction.DEVICE_ATTRIBUTE,
    ]


def test_the_effective_policy_and_the_test_question(registry: Registry) -> None:
    ops = Ops(registry)
    registry.add_device("SN1", provisioning=Provisioning.CONSOLE, actor="alice")
    builtin = ops.test_policy("device", "SN1", "publish", "devices/SN1/telemetry")  # type: ignore[arg-type]
    assert builtin.allowed and builtin.policy == "builtin:device"
    group_doc = {
        "statements": [
            {"sid": "c", "effect": "allow", "actions": ["connect"]},
            {"sid": "fw", "effect": "allow", "actions": ["subscribe", "receive"],
             "resources": ["groups/${group}/firmware"]},
        ]
    }  # fmt: skip
    ops.put_policy("group-fw", group_doc, actor="alice")
    ops.attach_policy("group-fw", TargetKind.GROUP, "line-7", actor="alice")
    ops.add_device_group("SN1", "line-7", actor="alice")
    effective = ops.effective_policy("device", "SN1")
    assert [p.name for p in effective.subject.policies] == ["group-fw"]
    assert ("group-fw", 1, "fw", "allow", "subscribe", "groups/line-7/firmware") in effective.rules
    decision = ops.test_policy("device", "SN1", "subscribe", "groups/line-7/firmware")  # type: ignore[arg-type]
    assert decision.allowed and decision.statement == "fw"
    refused = ops.test_policy("device", "SN1", "publish", "devices/SN1/telemetry")  # type: ignore[arg-type]
    assert not refused.allowed and "no statement allows it" in refused.explain()
