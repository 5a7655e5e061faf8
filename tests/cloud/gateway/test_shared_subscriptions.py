"""Shared subscriptions: services in one group split the messages, each exactly once."""

from __future__ import annotations

import mqtt5
import pytest
from mqtt5 import QoS, TopicFilter

from tests.cloud.gateway.harness import client_context
from tests.cloud.gateway.pki import DEVICE_SERIAL, SERVICE_NAME
from tests.cloud.gateway.test_mqtt5_strict import connect
from tests.support.mqtt import RawClient
from tests.support.pki import raw_leaf

TELEMETRY = f"devices/{DEVICE_SERIAL}/telemetry"


def subscribe(client: RawClient, pattern: str) -> list[int]:
    client.send(mqtt5.SubscribePacket(3, [TopicFilter(pattern, max_qos=QoS.AT_LEAST_ONCE)]))
    ack = client.recv()
    assert isinstance(ack, mqtt5.SubAckPacket)
    return [int(code) for code in ack.reason_codes]


def drain(client: RawClient) -> list[bytes]:
    got = []
    while True:
        try:
            packet = client.recv(timeout=0.5)
        except TimeoutError:
            return got
        assert isinstance(packet, mqtt5.PublishPacket)
        got.append(packet.payload)
        if int(packet.qos):
            client.send(mqtt5.PubAckPacket(packet.packet_id))


def test_a_group_of_services_shares_the_messages(gateway, pki, tmp_path):
    second_service = raw_leaf(pki.service_ca, "telemetry-ingest-2").write(
        tmp_path, "telemetry-ingest-2"
    )
    first = connect(gateway, pki, pki.service, SERVICE_NAME)
    second = connect(gateway, pki, second_service, "telemetry-ingest-2")
    device = connect(gateway, pki)
    try:
        assert subscribe(first, "$share/ingest/devices/+/telemetry") == [1]
        assert subscribe(second, "$share/ingest/devices/+/telemetry") == [1]
        assert subscribe(second, "devices/+/telemetry") == [1]  # and a plain one of its own
        for number in range(4):
            device.send(
                mqtt5.PublishPacket(TELEMETRY, b"%d" % number, qos=QoS.AT_LEAST_ONCE,
                                    packet_id=number + 1)
            )  # fmt: skip
            assert isinstance(device.recv(), mqtt5.PubAckPacket)
        got_first, got_second = drain(first), drain(second)
    finally:
        first.close()
        second.close()
        device.close()
    assert len(got_first) == 2 and len(got_second) == 6  # round robin; + 4 plain copies
    shared_to_second = [p for p in set(got_second) if got_second.count(p) == 2]
    # Each message went to exactly one member of the group.
    assert sorted(got_first + shared_to_second) == [b"0", b"1", b"2", b"3"]


def test_members_take_turns(gateway, pki):
    from tether.cloud.gateway import shared
    from tether.cloud.gateway.broker import Message
    from tether.cloud.gateway.identity import Identity, IdentityKind

    class Member:
        def __init__(self) -> None:
            self.got: list[bytes] = []

        def deliver(self, message: Message, qos: int) -> bool:
            self.got.append(message.payload)
            return True

    class Dropper:
        def deliver(self, message: Message, qos: int) -> bool:
            return False

    broker = gateway.gateway.broker
    key = shared.SharedFilter("g", "devices/+/telemetry")
    one, two, dropper = Member(), Member(), Dropper()

    def run() -> None:
        group = shared.join(broker, key, one, 1)
        shared.join(broker, key, dropper, 1)
        shared.join(broker, key, two, 1)
        sender = Identity(IdentityKind.DEVICE, DEVICE_SERIAL, "", "")
        for number in range(6):
            broker.publish(Message(TELEMETRY, b"%d" % number, 1, sender))
        for member in (one, two, dropper):
            shared.leave(broker, group, member)

    gateway.sync(run)
    assert one.got == [b"0", b"2", b"4"]  # the dropper's turns pass to the next member
    assert two.got == [b"1", b"3", b"5"]
    assert gateway.sync(broker.subscription_count) == 0  # the empty group left the broker


@pytest.mark.parametrize(
    ("pattern", "code"),
    [
        ("$share/g/devices/OTHER/commands/#", 0x87),  # a device may not share at all
        ("$share//devices/+/telemetry", 0x8F),
        ("$share/g", 0x8F),
    ],
)
def test_devices_and_bad_groups_are_refused(gateway, pki, pattern, code):
    device = RawClient(gateway.port, client_context(pki, pki.device))
    try:
        device.connect(DEVICE_SERIAL)
        assert subscribe(device, pattern) == [code]
    finally:
        device.close()


def test_the_policy_holds_inside_a_group(gateway, pki):
    service = connect(gateway, pki, pki.service, SERVICE_NAME)
    try:
        assert subscribe(service, "$share/g/#") == [0x87]  # a service reads devices/ only
    finally:
        service.close()


@pytest.mark.parametrize(
    ("pattern", "parsed"),
    [
        ("$share/g/devices/+/t", ("g", "devices/+/t")),
        ("$share/g+/devices/x", None),
        ("$share/g#/devices/x", None),
        ("$share//devices/x", None),
        ("$share/g", None),
        ("$share/g/$sender/+/+/x", None),
    ],
)
def test_parse_shared(pattern, parsed):
    from tether.cloud.gateway.shared import parse_shared

    got = parse_shared(pattern)
    assert (None if got is None else (got.group, got.inner)) == parsed
