"""MQTT 3.1.1 sessions over real TLS with a raw 3.1.1 client: same identity rules as MQTT 5."""

from __future__ import annotations

import time

import mqtt5
import pytest
from mqtt5 import QoS, TopicFilter

from tests.cloud.gateway.harness import client_context, wait_for_log
from tests.cloud.gateway.pki import DEVICE_SERIAL, SERVICE_NAME
from tests.cloud.gateway.test_mqtt5_strict import connect as connect5
from tests.support.mqtt import RawClient
from tether.cloud.gateway import certificate_fingerprint
from tether.cloud.gateway.mqtt311 import decode, encode
from tether.cloud.gateway.mqtt311.packets import (
    ConnAck,
    ConnAckCode,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Will,
)

OWN = f"devices/{DEVICE_SERIAL}"
TELEMETRY = f"{OWN}/telemetry"


def raw311(port, pki, identity=None) -> RawClient:
    return RawClient(port, client_context(pki, identity or pki.device), decode=decode)


def connect311(port, pki, identity=None, name=DEVICE_SERIAL, **kwargs) -> RawClient:
    client = raw311(port, pki, identity)
    client.send(encode(Connect(name, **kwargs)))
    assert client.recv() == ConnAck(ConnAckCode.ACCEPTED, session_present=False)
    return client


@pytest.fixture
def device(gateway, pki):
    client = connect311(gateway.port, pki)
    yield client
    client.close()


def test_connect_ping_subscribe_and_disconnect(gateway, pki, caplog):
    device = connect311(gateway.port, pki)
    record = wait_for_log(caplog, "mqtt_connected")
    assert "MQTT 3.1.1 CONNECT accepted" in record.getMessage()
    device.send(encode(PingReq()))
    assert device.recv() == PingResp()
    device.send(encode(Subscribe(3, ((f"{OWN}/commands/#", 2), ("devices/OTHER/x", 1)))))
    assert device.recv() == SubAck(3, (2, 0x80))
    device.send(encode(Disconnect()))
    assert device.wait_closed() == []
    device.close()


def test_client_id_must_be_the_certificate_identity(gateway, pki, caplog):
    client = raw311(gateway.port, pki)
    try:
        client.send(encode(Connect("SOMEONE-ELSE")))
        assert client.recv() == ConnAck(ConnAckCode.IDENTIFIER_REJECTED)
        assert client.wait_closed() == []
    finally:
        client.close()
    wait_for_log(caplog, "mqtt_client_id_mismatch")


@pytest.mark.parametrize(
    "connect",
    [
        b"\x10\x0e\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x00",  # MQTT 3.1
        b"\x10\x0c\x00\x04MQTT\x06\x02\x00\x3c\x00\x00",  # a level nobody speaks yet
        b"\x10\x0c\x00\x04MQXX\x04\x02\x00\x3c\x00\x00",  # level 4 under another name
    ],
)
def test_an_unsupported_protocol_level_gets_connack_0x01(gateway, pki, caplog, connect):
    client = raw311(gateway.port, pki)
    try:
        client.send(connect)
        assert client.wait_closed() == [ConnAck(ConnAckCode.UNACCEPTABLE_PROTOCOL_VERSION)]
    finally:
        client.close()
    wait_for_log(caplog, "mqtt_protocol_version_unsupported")


def test_a_revoked_or_disabled_identity_gets_a_readable_311_refusal(gateway, pki, caplog):
    fingerprint = certificate_fingerprint(pki.device.certificate)
    gateway.sync(lambda: gateway.authority.revoke(fingerprint))
    client = raw311(gateway.port, pki)
    try:
        client.send(encode(Connect(DEVICE_SERIAL)))
        assert client.wait_closed() == [ConnAck(ConnAckCode.BAD_USERNAME_OR_PASSWORD)]
    finally:
        client.close()
    gateway.sync(lambda: gateway.authority.disable(SERVICE_NAME))
    client = raw311(gateway.port, pki, pki.service)
    try:
        client.send(encode(Connect(SERVICE_NAME)))
        assert client.wait_closed() == [ConnAck(ConnAckCode.NOT_AUTHORIZED)]
    finally:
        client.close()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x36\x03\x00\x01a", "mqtt311_malformed_packet"),  # QoS 3
        (b"\x32\x05\x00\x01a\x00\x00", "mqtt311_malformed_packet"),  # packet id 0
        (b"\x82\x02\x00\x01", "mqtt311_malformed_packet"),  # SUBSCRIBE without a filter
        (encode(Publish(f"{OWN}/+", b"x")), "mqtt_topic_name_invalid"),
        (encode(Publish("devices/X/t", b"x", qos=1, packet_id=1)), "publish_not_authorized"),
        (encode(Publish(TELEMETRY, b"x", retain=True)), "mqtt_retain_unsupported"),
        (encode(ConnAck()), "mqtt_protocol_error"),  # a server packet from a client
        (encode(Connect(DEVICE_SERIAL)), "mqtt_protocol_error"),  # a second CONNECT
    ],
)  # fmt: skip
def test_a_violation_closes_the_connection_without_a_packet(device, caplog, data, code):
    device.send(data)
    assert device.wait_closed() == []  # 3.1.1 has no server DISCONNECT: it just closes
    wait_for_log(caplog, code)


def test_a_malformed_connect_is_closed_without_connack(gateway, pki, caplog):
    client = raw311(gateway.port, pki)
    try:
        client.send(b"\x10\x0c\x00\x04MQTT\x04\x01\x00\x3c\x00\x00")  # reserved flag set
        assert client.wait_closed() == []
    finally:
        client.close()
    wait_for_log(caplog, "mqtt311_malformed_packet")


def test_qos1_and_qos2_reach_an_mqtt5_service_attributed(gateway, pki, device):
    service = connect5(gateway, pki, pki.service, SERVICE_NAME)
    try:
        service.send(
            mqtt5.SubscribePacket(1, [TopicFilter("devices/+/telemetry", max_qos=QoS.AT_MOST_ONCE)])
        )
        assert isinstance(service.recv(), mqtt5.SubAckPacket)
        device.send(encode(Publish(TELEMETRY, b"q1", qos=1, packet_id=7)))
        assert device.recv() == PubAck(7)
        device.send(encode(Publish(TELEMETRY, b"q2", qos=2, packet_id=8)))
        assert device.recv() == PubRec(8)
        device.send(encode(Publish(TELEMETRY, b"q2", qos=2, packet_id=8, dup=True)))
        assert device.recv() == PubRec(8)  # a resend: acknowledged, not routed again
        device.send(encode(PubRel(8)))
        assert device.recv() == PubComp(8)
        got = [service.recv(), service.recv()]
        with pytest.raises(TimeoutError):
            service.recv(timeout=0.3)
    finally:
        service.close()
    assert [(p.payload, p.user_properties) for p in got] == [
        (b"q1", [("tether-sender", DEVICE_SERIAL)]),
        (b"q2", [("tether-sender", DEVICE_SERIAL)]),
    ]


def test_a_311_device_receives_commands_with_the_sender_in_the_topic(gateway, pki, device):
    device.send(encode(Subscribe(1, ((f"$sender/+/+/{OWN}/commands/#", 2),))))
    assert device.recv() == SubAck(1, (2,))
    service = connect5(gateway, pki, pki.service, SERVICE_NAME)
    try:
        service.send(
            mqtt5.PublishPacket(f"{OWN}/commands/reboot", b"now", qos=QoS.EXACTLY_ONCE, packet_id=4)
        )
        assert isinstance(service.recv(), mqtt5.PubRecPacket)
        service.send(mqtt5.PubRelPacket(4))
        assert isinstance(service.recv(), mqtt5.PubCompPacket)
        got = device.recv()
        assert isinstance(got, Publish) and got.qos == 2
        assert got.topic == f"$sender/service/{SERVICE_NAME}/{OWN}/commands/reboot"
        device.send(encode(PubRec(got.packet_id)))
        assert device.recv() == PubRel(got.packet_id)
        device.send(encode(PubComp(got.packet_id)))
    finally:
        service.close()


def test_the_will_of_a_311_device_reaches_a_service_unless_it_disconnects(gateway, pki):
    service = connect5(gateway, pki, pki.service, SERVICE_NAME)
    try:
        service.send(mqtt5.SubscribePacket(1, [TopicFilter("devices/+/status")]))
        assert isinstance(service.recv(), mqtt5.SubAckPacket)
        will = Will(f"{OWN}/status", b"offline", qos=1)
        polite = connect311(gateway.port, pki, will=will)
        polite.send(encode(Disconnect()))
        polite.wait_closed()
        polite.close()
        rude = connect311(gateway.port, pki, will=will)
        rude.close()  # no DISCONNECT: the Will is published
        got = service.recv()
        assert got.payload == b"offline"
        assert got.user_properties == [("tether-sender", DEVICE_SERIAL)]
        with pytest.raises(TimeoutError):
            service.recv(timeout=0.3)  # and only once
    finally:
        service.close()


def test_a_will_outside_the_policy_is_refused_with_0x05(gateway, pki, caplog):
    client = raw311(gateway.port, pki)
    try:
        client.send(encode(Connect(DEVICE_SERIAL, will=Will("devices/OTHER/status", b"x"))))
        assert client.recv() == ConnAck(ConnAckCode.NOT_AUTHORIZED)
    finally:
        client.close()
    wait_for_log(caplog, "publish_not_authorized")


def test_keep_alive_0_is_held_to_the_maximum(gateway_factory, pki, caplog):
    running = gateway_factory(max_keep_alive=1)
    client = connect311(running.port, pki, keep_alive=0)
    started = time.monotonic()
    try:
        assert client.wait_closed(timeout=10) == []
    finally:
        client.close()
    assert time.monotonic() - started < 9  # closed after 1.5 x 1 s of silence, not never
    wait_for_log(caplog, "mqtt_keep_alive_timeout")


def test_a_second_connection_takes_the_session_over(gateway, pki, caplog):
    first = connect311(gateway.port, pki)
    second = connect311(gateway.port, pki)
    try:
        assert first.wait_closed() == []
        second.send(encode(PingReq()))
        assert second.recv() == PingResp()
    finally:
        first.close()
        second.close()
