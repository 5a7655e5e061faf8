"""MQTT 5 features over real TLS with raw clients: QoS 2, topic aliases, subscription ids.

Also the ``$sender`` attribution views, which MQTT 5 clients may use as 3.1.1 clients do.
"""

from __future__ import annotations

import mqtt5
import pytest
from mqtt5 import QoS, TopicFilter

from tests.cloud.gateway.pki import DEVICE_SERIAL, SERVICE_NAME
from tests.cloud.gateway.test_mqtt5_strict import connect
from tests.support.mqtt import RawClient

OWN = f"devices/{DEVICE_SERIAL}"
TELEMETRY = f"{OWN}/telemetry"


def subscribe(client: RawClient, *filters: TopicFilter, subscription_id: int | None = None):
    client.send(mqtt5.SubscribePacket(9, list(filters), subscription_id=subscription_id))
    ack = client.recv()
    assert isinstance(ack, mqtt5.SubAckPacket)
    return [int(code) for code in ack.reason_codes]


@pytest.fixture
def pair(gateway, pki):
    device = connect(gateway, pki)
    service = connect(gateway, pki, pki.service, SERVICE_NAME)
    yield device, service
    device.close()
    service.close()


def test_qos2_in_is_routed_exactly_once_even_when_resent(pair):
    device, service = pair
    assert subscribe(service, TopicFilter("devices/+/telemetry", max_qos=QoS.AT_LEAST_ONCE)) == [1]
    publish = mqtt5.PublishPacket(TELEMETRY, b"t=1", qos=QoS.EXACTLY_ONCE, packet_id=42)
    device.send(publish)
    rec = device.recv()
    assert isinstance(rec, mqtt5.PubRecPacket) and rec.packet_id == 42
    # The PUBREC was "lost": the client resends the PUBLISH with DUP; it is not routed again.
    device.send(
        mqtt5.PublishPacket(TELEMETRY, b"t=1", qos=QoS.EXACTLY_ONCE, packet_id=42, duplicate=True)
    )
    assert isinstance(device.recv(), mqtt5.PubRecPacket)
    device.send(mqtt5.PubRelPacket(42))
    comp = device.recv()
    assert isinstance(comp, mqtt5.PubCompPacket)
    assert comp.reason_code == mqtt5.PubCompReasonCode.SUCCESS
    delivered = service.recv()
    assert isinstance(delivered, mqtt5.PublishPacket) and delivered.payload == b"t=1"
    assert delivered.qos == QoS.AT_LEAST_ONCE  # min(QoS 2, granted 1)
    service.send(mqtt5.PubAckPacket(delivered.packet_id))
    with pytest.raises(TimeoutError):
        service.recv(timeout=0.3)  # exactly once: no second copy
    # A released identifier is new again; an unknown PUBREL gets PUBCOMP 0x92.
    device.send(mqtt5.PubRelPacket(42))
    comp = device.recv()
    assert comp.reason_code == mqtt5.PubCompReasonCode.PACKET_ID_NOT_FOUND


def test_qos2_out_holds_the_identifier_until_pubcomp(gateway, pki):
    service = connect(gateway, pki, pki.service, SERVICE_NAME, receive_max=1)
    device = connect(gateway, pki)
    try:
        assert subscribe(service, TopicFilter("devices/+/telemetry", max_qos=QoS.EXACTLY_ONCE)) == [
            2
        ]
        for packet_id in (1, 2):
            device.send(
                mqtt5.PublishPacket(TELEMETRY, b"%d" % packet_id, qos=QoS.EXACTLY_ONCE,
                                    packet_id=packet_id)
            )  # fmt: skip
            assert isinstance(device.recv(), mqtt5.PubRecPacket)
            device.send(mqtt5.PubRelPacket(packet_id))
            assert isinstance(device.recv(), mqtt5.PubCompPacket)
        first = service.recv()
        assert isinstance(first, mqtt5.PublishPacket) and first.qos == QoS.EXACTLY_ONCE
        service.send(mqtt5.PubRecPacket(first.packet_id))
        rel = service.recv()
        assert isinstance(rel, mqtt5.PubRelPacket) and rel.packet_id == first.packet_id
        with pytest.raises(TimeoutError):
            service.recv(timeout=0.3)  # Receive Maximum 1: PUBREC does not free the window
        service.send(mqtt5.PubCompPacket(first.packet_id))
        second = service.recv()
        assert isinstance(second, mqtt5.PublishPacket) and second.payload == b"2"
    finally:
        service.close()
        device.close()


def test_inbound_topic_alias_is_resolved_for_the_receiver(pair):
    device, service = pair
    assert subscribe(service, TopicFilter("devices/+/telemetry", max_qos=QoS.AT_MOST_ONCE)) == [0]
    device.send(mqtt5.PublishPacket(TELEMETRY, b"a", topic_alias=3))
    device.send(mqtt5.PublishPacket("", b"b", topic_alias=3))
    got = [service.recv(), service.recv()]
    assert [(p.topic, p.payload, p.topic_alias) for p in got] == [
        (TELEMETRY, b"a", None),
        (TELEMETRY, b"b", None),
    ]


def test_outbound_topic_alias_sets_then_uses_the_alias(gateway, pki):
    service = connect(gateway, pki, pki.service, SERVICE_NAME, topic_alias_max=1)
    device = connect(gateway, pki)
    try:
        assert subscribe(service, TopicFilter("devices/#", max_qos=QoS.AT_MOST_ONCE)) == [0]
        for payload in (b"1", b"2"):
            device.send(mqtt5.PublishPacket(TELEMETRY, payload))
        device.send(mqtt5.PublishPacket(f"{OWN}/other", b"3"))
        got = [service.recv() for _ in range(3)]
    finally:
        service.close()
        device.close()
    assert [(p.topic, p.topic_alias, p.payload) for p in got] == [
        (TELEMETRY, 1, b"1"),  # sets alias 1
        ("", 1, b"2"),  # uses it
        (f"{OWN}/other", None, b"3"),  # the client allows one alias only
    ]


def test_subscription_identifiers_come_with_every_matching_delivery(pair):
    device, service = pair
    assert subscribe(service, TopicFilter("devices/+/telemetry"), subscription_id=5) == [2]
    assert subscribe(service, TopicFilter("devices/#"), subscription_id=7) == [2]
    device.send(mqtt5.PublishPacket(TELEMETRY, b"x"))
    delivered = service.recv()
    assert delivered.subscription_ids == [5, 7]
    device.send(mqtt5.PublishPacket(f"{OWN}/status", b"y"))
    assert service.recv().subscription_ids == [7]


def test_a_sender_view_names_the_certificate_not_the_client(pair):
    device, service = pair
    assert subscribe(service, TopicFilter("$sender/+/+/devices/+/telemetry")) == [2]
    assert subscribe(device, TopicFilter(f"$sender/service/+/{OWN}/commands/#")) == [2]
    device.send(mqtt5.PublishPacket(TELEMETRY, b"t", user_properties=[("tether-sender", "x")]))
    got = service.recv()
    assert got.topic == f"$sender/device/{DEVICE_SERIAL}/{TELEMETRY}"
    assert got.user_properties == [("tether-sender", DEVICE_SERIAL)]
    service.send(mqtt5.PublishPacket(f"{OWN}/commands/reboot", b"now"))
    assert device.recv().topic == f"$sender/service/{SERVICE_NAME}/{OWN}/commands/reboot"


@pytest.mark.parametrize(
    ("pattern", "code"),
    [
        ("$sender/device/+/devices/OTHER/commands/#", 0x87),  # the inner filter is policed
        ("$sender/robot/+/devices/+/telemetry", 0x8F),  # no such kind
        ("$sender/#", 0x8F),
        ("$sender/+/+/$sender/+/+/devices/x", 0x8F),
    ],
)
def test_sender_views_obey_the_policy_and_the_grammar(pair, pattern, code):
    device, _ = pair
    assert subscribe(device, TopicFilter(pattern)) == [code]


def test_nobody_can_publish_to_a_sender_topic(pair):
    device, _service = pair
    device.send(
        mqtt5.PublishPacket(
            f"$sender/service/{SERVICE_NAME}/{OWN}/x", b"x", qos=QoS.AT_LEAST_ONCE, packet_id=1
        )
    )
    ack = device.recv()
    assert ack.reason_code == mqtt5.PubAckReasonCode.NOT_AUTHORIZED
