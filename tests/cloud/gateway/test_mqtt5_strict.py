"""MQTT 5 strictness: each protocol error of issue 17 refused with the code the spec names.

Raw clients build the offending bytes by hand where the ``mqtt5`` codec would refuse to
write them.
"""

from __future__ import annotations

import mqtt5
import pytest
from mqtt5 import ConnAckReasonCode, DisconnectReasonCode, QoS, TopicFilter

from tests.cloud.gateway.harness import client_context, wait_for_log
from tests.cloud.gateway.pki import DEVICE_SERIAL, SERVICE_NAME
from tests.support.mqtt import RawClient

OWN = f"devices/{DEVICE_SERIAL}"


def frame(first: int, body: bytes) -> bytes:
    assert len(body) < 128
    return bytes([first, len(body)]) + body


def utf8(text: str) -> bytes:
    return len(text.encode()).to_bytes(2, "big") + text.encode()


def connect(gateway, pki, identity=None, name=DEVICE_SERIAL, **kwargs) -> RawClient:
    client = RawClient(gateway.port, client_context(pki, identity or pki.device))
    ack = client.connect(name, keep_alive=30, **kwargs)
    assert ack.reason_code == ConnAckReasonCode.SUCCESS
    return client


@pytest.fixture
def device(gateway, pki):
    client = connect(gateway, pki)
    yield client
    client.close()


@pytest.mark.parametrize(
    ("data", "reason", "code"),
    [
        # [MQTT-3.3.2-2] a topic name with a wildcard
        (
            frame(0x30, utf8(f"{OWN}/+") + b"\x00" + b"x"),
            DisconnectReasonCode.TOPIC_NAME_INVALID,
            "mqtt_topic_name_invalid",
        ),
        (
            frame(0x30, utf8(f"{OWN}/#") + b"\x00" + b"x"),
            DisconnectReasonCode.TOPIC_NAME_INVALID,
            "mqtt_topic_name_invalid",
        ),
        # [MQTT-2.2.1-3] QoS 1 and QoS 2 with packet identifier 0
        (
            frame(0x32, utf8(f"{OWN}/t") + b"\x00\x00" + b"\x00" + b"x"),
            DisconnectReasonCode.PROTOCOL_ERROR,
            "mqtt_protocol_error",
        ),
        (
            frame(0x34, utf8(f"{OWN}/t") + b"\x00\x00" + b"\x00" + b"x"),
            DisconnectReasonCode.PROTOCOL_ERROR,
            "mqtt_protocol_error",
        ),
        # [MQTT-3.8.3-2] SUBSCRIBE with no topic filter
        (frame(0x82, b"\x00\x07\x00"), DisconnectReasonCode.PROTOCOL_ERROR, "mqtt_protocol_error"),
        # [MQTT-3.8.3-5] reserved subscription option bits (6 and 7)
        (
            frame(0x82, b"\x00\x07\x00" + utf8(f"{OWN}/t") + b"\x41"),
            DisconnectReasonCode.MALFORMED_PACKET,
            "mqtt_malformed_packet",
        ),
        (
            frame(0x82, b"\x00\x07\x00" + utf8(f"{OWN}/t") + b"\x81"),
            DisconnectReasonCode.MALFORMED_PACKET,
            "mqtt_malformed_packet",
        ),
        # AUTH without an agreed Authentication Method: 0x82, in both of its legal forms
        (b"\xf0\x00", DisconnectReasonCode.PROTOCOL_ERROR, "mqtt_protocol_error"),
        (b"\xf0\x02\x18\x00", DisconnectReasonCode.PROTOCOL_ERROR, "mqtt_protocol_error"),
        # Topic alias 0 [MQTT-3.3.2-8]: the codec cannot read it (0x81); beyond the Topic
        # Alias Maximum (16) [MQTT-3.3.2-9]: 0x94
        (
            frame(0x30, utf8(f"{OWN}/t") + b"\x03\x23\x00\x00" + b"x"),
            DisconnectReasonCode.MALFORMED_PACKET,
            "mqtt_malformed_packet",
        ),
        (
            frame(0x30, utf8(f"{OWN}/t") + b"\x03\x23\x00\x11" + b"x"),
            DisconnectReasonCode.TOPIC_ALIAS_INVALID,
            "mqtt_topic_alias_invalid",
        ),
        # An empty topic with an alias never set
        (
            frame(0x30, utf8("") + b"\x03\x23\x00\x05" + b"x"),
            DisconnectReasonCode.PROTOCOL_ERROR,
            "mqtt_protocol_error",
        ),
    ],
)
def test_each_protocol_error_gets_the_spec_reason_code(device, caplog, data, reason, code):
    device.send(data)
    seen = device.wait_closed()
    assert [type(p) for p in seen] == [mqtt5.DisconnectPacket]
    assert seen[0].reason_code == reason
    wait_for_log(caplog, code)


def refused_puback(client: RawClient) -> mqtt5.PubAckPacket:
    client.send(mqtt5.PublishPacket("devices/OTHER/t", b"x", qos=QoS.AT_LEAST_ONCE, packet_id=3))
    ack = client.recv()
    assert isinstance(ack, mqtt5.PubAckPacket)
    assert ack.reason_code == mqtt5.PubAckReasonCode.NOT_AUTHORIZED
    return ack


def test_request_problem_information_0_means_no_reason_strings(gateway, pki):
    quiet = connect(gateway, pki, request_problem_info=False)
    try:
        assert refused_puback(quiet).reason_str is None  # [MQTT-3.1.2-29]
    finally:
        quiet.close()
    talkative = connect(gateway, pki)
    try:
        assert refused_puback(talkative).reason_str == "publish_not_authorized"
    finally:
        talkative.close()


def test_qos1_beyond_the_clients_receive_maximum_waits_and_all_arrive(gateway, pki):
    device = connect(gateway, pki, receive_max=2)
    service = connect(gateway, pki, pki.service, SERVICE_NAME)
    try:
        device.send(
            mqtt5.SubscribePacket(1, [TopicFilter(f"{OWN}/commands/#", max_qos=QoS.AT_LEAST_ONCE)])
        )
        assert isinstance(device.recv(), mqtt5.SubAckPacket)
        for number in range(5):
            service.send(
                mqtt5.PublishPacket(
                    f"{OWN}/commands/c", str(number).encode(), qos=QoS.AT_LEAST_ONCE,
                    packet_id=number + 1,
                )
            )  # fmt: skip
            assert isinstance(service.recv(), mqtt5.PubAckPacket)
        first = [device.recv(), device.recv()]
        with pytest.raises(TimeoutError):
            device.recv(timeout=0.3)  # the window is full: the other three wait
        received = [p.payload for p in first]
        for packet in first:
            device.send(mqtt5.PubAckPacket(packet.packet_id))
        while len(received) < 5:
            packet = device.recv()
            assert isinstance(packet, mqtt5.PublishPacket)
            received.append(packet.payload)
            device.send(mqtt5.PubAckPacket(packet.packet_id))
        assert received == [b"0", b"1", b"2", b"3", b"4"]
    finally:
        device.close()
        service.close()
