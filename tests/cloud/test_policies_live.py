"""Policies with real MQTT clients (paho over mutual TLS) against a running CloudService.

Every change is made through the admin service on the registry, exactly as the API or the
CLI would, and reaches the gateway only through its change feed (the audit log).
"""

from __future__ import annotations

import queue
import time
from typing import Any

import pytest

from tests.cloud.conftest import ACTOR, TIMEOUT, Cloud
from tests.cloud.gateway.harness import wait_for_log
from tests.support.mqtt import PahoClient
from tether.cloud.operations import AdminOperations
from tether.cloud.registry.policies import TargetKind

SERVICE = "fleet-commander"
NOT_AUTHORIZED = 135
CONNECT_AND_OWN = [
    {"sid": "connect", "effect": "allow", "actions": ["connect"]},
    {"sid": "own", "effect": "allow", "actions": ["publish", "subscribe", "receive"],
     "resources": ["devices/${serial}/#"]},
]  # fmt: skip


def _ops(cloud: Cloud) -> AdminOperations:
    return AdminOperations(
        cloud.registry, root_certificate=cloud.pki.root.certificate, online_ca=None
    )


def _pubacks(client: PahoClient) -> queue.Queue[tuple[int, int]]:
    acks: queue.Queue[tuple[int, int]] = queue.Queue()

    def on_publish(_c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        acks.put((mid, int(getattr(reason, "value", reason))))

    client.client.on_publish = on_publish
    return acks


def _publish(client: PahoClient, acks: queue.Queue[tuple[int, int]], topic: str) -> int:
    """Publish at QoS 1 and return the PUBACK reason code."""
    info = client.client.publish(topic, b"x", qos=1)
    while True:
        mid, code = acks.get(timeout=TIMEOUT)
        if mid == info.mid:
            return code


def _codes(suback: list[Any]) -> list[int]:
    return [int(getattr(code, "value", code)) for code in suback]


def test_a_device_is_confined_to_its_subtree_and_a_deny_overrides_an_allow(
    cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    ops = _ops(cloud)
    device = cloud.paho(cloud.console_device("POL-000001"), "POL-000001")
    try:
        acks = _pubacks(device)
        # The built-in default: own subtree only.
        assert _publish(device, acks, "devices/POL-000001/telemetry") < 0x80
        assert _publish(device, acks, "devices/POL-000002/telemetry") == NOT_AUTHORIZED
        assert _codes(device.subscribe("devices/+/telemetry")) == [NOT_AUTHORIZED]
        assert _codes(device.subscribe("devices/POL-000001/#")) == [1]
        no_secret = {"sid": "no-secret", "effect": "deny", "actions": ["publish"],
                     "resources": ["devices/${serial}/secret"]}  # fmt: skip
        ops.put_policy("confined", {"statements": [*CONNECT_AND_OWN, no_secret]}, actor=ACTOR)
        ops.attach_policy("confined", TargetKind.DEVICE, "POL-000001", actor=ACTOR)
        # Applied live (the feed); the allow on devices/POL-000001/# loses to the deny.
        refused = _poll_until_refused(device, acks, "devices/POL-000001/secret")
        assert refused == NOT_AUTHORIZED
        assert _publish(device, acks, "devices/POL-000001/state") < 0x80
        refusals = [
            r.getMessage()
            for r in caplog.records
            if getattr(r, "tether_code", None) == "publish_not_authorized"
        ]
        assert any("policy 'confined' v1 statement 'no-secret'" in text for text in refusals)
    finally:
        device.stop()


def _poll_until_refused(client: PahoClient, acks: queue.Queue[tuple[int, int]], topic: str) -> int:
    """Publish until the feed has applied a change (bounded: 50 tries)."""
    for _ in range(50):
        code = _publish(client, acks, topic)
        if code >= 0x80:
            return code
    raise AssertionError(f"{topic} was never refused")


def test_group_topics_and_a_service_that_commands_one_group_only(cloud: Cloud) -> None:
    ops = _ops(cloud)
    member = cloud.console_device("GRP-000001")
    outsider = cloud.console_device("GRP-000002")
    commander = cloud.service_identity(SERVICE)
    ops.add_device_group("GRP-000001", "line-7", actor=ACTOR)
    ops.add_device_group("GRP-000002", "line-8", actor=ACTOR)
    group_doc = {"statements": [*CONNECT_AND_OWN, {
        "sid": "group-topics", "effect": "allow", "actions": ["subscribe", "receive"],
        "resources": ["groups/${group}/firmware", "groups/${group}/commands/#"]}]}  # fmt: skip
    ops.put_policy("group-member", group_doc, actor=ACTOR)
    ops.attach_policy(
        "group-member", TargetKind.CA, cloud.fingerprint(cloud.pki.device_ca), actor=ACTOR
    )
    service_doc = {"statements": [
        {"sid": "connect", "effect": "allow", "actions": ["connect"]},
        {"sid": "line-7-only", "effect": "allow", "actions": ["publish"],
         "resources": ["groups/line-7/commands/#", "groups/line-7/firmware"]}]}  # fmt: skip
    ops.put_policy("line-7-commander", service_doc, actor=ACTOR)
    ops.attach_policy("line-7-commander", TargetKind.SERVICE, SERVICE, actor=ACTOR)
    inside = cloud.paho(member, "GRP-000001")
    outside = cloud.paho(outsider, "GRP-000002")
    service = cloud.paho(commander, SERVICE)
    try:
        acks = _pubacks(service)
        assert _codes(inside.subscribe("groups/line-7/firmware")) == [1]
        assert _codes(inside.subscribe("groups/line-7/commands/#")) == [1]
        assert _codes(outside.subscribe("groups/line-7/firmware")) == [NOT_AUTHORIZED]
        assert _publish(service, acks, "groups/line-7/firmware") == 0
        assert inside.messages.get(timeout=TIMEOUT).topic == "groups/line-7/firmware"
        assert _publish(service, acks, "groups/line-7/commands/reboot") == 0
        assert inside.messages.get(timeout=TIMEOUT).topic == "groups/line-7/commands/reboot"
        assert _publish(service, acks, "groups/line-8/commands/reboot") == NOT_AUTHORIZED
        # The built-in service rights are gone: the policy is all the service has.
        assert _publish(service, acks, "devices/GRP-000002/commands/reboot") == NOT_AUTHORIZED
        assert outside.messages.empty()
    finally:
        for client in (inside, outside, service):
            client.stop()


def test_a_quarantine_applies_to_a_connected_device_without_a_reconnect(
    cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    ops = _ops(cloud)
    device = cloud.paho(cloud.console_device("QUA-000001"), "QUA-000001")
    service = cloud.paho(cloud.service_identity(SERVICE), SERVICE)
    try:
        acks = _pubacks(device)
        assert _codes(device.subscribe("devices/QUA-000001/commands/#")) == [1]
        assert _publish(device, acks, "devices/QUA-000001/state") < 0x80
        quarantine = {"statements": [
            {"sid": "connect", "effect": "allow", "actions": ["connect"]},
            {"sid": "telemetry-only", "effect": "allow", "actions": ["publish"],
             "resources": ["devices/${serial}/telemetry"]}]}  # fmt: skip
        ops.put_policy("quarantine", quarantine, actor=ACTOR)
        ops.attach_policy("quarantine", TargetKind.DEVICE, "QUA-000001", actor=ACTOR)
        record = wait_for_log(caplog, "subscription_removed_by_policy")
        assert "'devices/QUA-000001/commands/#'" in record.getMessage()
        assert "no statement allows it" in record.getMessage()
        # Same connection: state refused, telemetry still allowed, commands no longer arrive.
        assert _publish(device, acks, "devices/QUA-000001/state") == NOT_AUTHORIZED
        assert _publish(device, acks, "devices/QUA-000001/telemetry") < 0x80
        service.client.publish("devices/QUA-000001/commands/x", b"c", qos=1).wait_for_publish(
            TIMEOUT
        )
        with pytest.raises(queue.Empty):
            device.messages.get(timeout=0.5)
        assert device.disconnects.empty()
        # Withdrawing the connect right drops the session with DISCONNECT 0x87.
        ops.put_policy(
            "quarantine",
            {"statements": [{"sid": "cut-off", "effect": "deny", "actions": ["connect"]}]},
            actor=ACTOR,
        )
        reason = device.disconnects.get(timeout=TIMEOUT)
        assert int(getattr(reason, "value", reason)) == NOT_AUTHORIZED
        assert "statement 'cut-off'" in wait_for_log(caplog, "session_dropped").getMessage()
    finally:
        device.stop()
        service.stop()


def test_a_policy_change_removes_a_sender_view_and_a_shared_subscription_it_refuses(
    cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    """``SessionSubscriptions.remove_refused`` judges a view and a share by their inner filter."""
    ops = _ops(cloud)
    device = cloud.console_device("VIEW-00001")
    service_identity = cloud.service_identity(SERVICE)
    service = cloud.paho(service_identity, SERVICE)
    sender = cloud.paho(device, "VIEW-00001")
    view = "$sender/device/+/devices/+/telemetry"
    shared = "$share/ingest/devices/+/telemetry"
    try:
        acks = _pubacks(sender)
        for pattern in (view, shared, "devices/+/state"):
            assert _codes(service.subscribe(pattern)) == [1]
        assert _publish(sender, acks, "devices/VIEW-00001/telemetry") == 0
        got = {service.messages.get(timeout=TIMEOUT).topic for _ in range(2)}
        assert got == {"$sender/device/VIEW-00001/devices/VIEW-00001/telemetry",
                       "devices/VIEW-00001/telemetry"}  # fmt: skip
        state_only = {"statements": [
            {"sid": "connect", "effect": "allow", "actions": ["connect"]},
            {"sid": "state", "effect": "allow", "actions": ["subscribe", "receive"],
             "resources": ["devices/+/state"]}]}  # fmt: skip
        ops.put_policy("state-reader", state_only, actor=ACTOR)
        ops.attach_policy("state-reader", TargetKind.SERVICE, SERVICE, actor=ACTOR)
        wait_for_log(caplog, "subscription_removed_by_policy")
        removed: set[str] = set()
        for _ in range(250):  # both removals are logged by the same re-evaluation (bounded)
            removed = {
                r.getMessage().split("'")[1]
                for r in caplog.records
                if getattr(r, "tether_code", None) == "subscription_removed_by_policy"
            }
            if len(removed) >= 2:
                break
            time.sleep(0.02)
        assert removed == {view, shared}
        assert _publish(sender, acks, "devices/VIEW-00001/telemetry") == 0x10  # no subscriber
        assert _publish(sender, acks, "devices/VIEW-00001/state") == 0
        # The kept plain filter still delivers, and it is the only thing that arrives.
        assert service.messages.get(timeout=TIMEOUT).topic == "devices/VIEW-00001/state"
        with pytest.raises(queue.Empty):
            service.messages.get(timeout=0.5)
    finally:
        service.stop()
        sender.stop()
