"""The MQTT 5 session over real TLS, packet by packet with a raw client."""

from __future__ import annotations

import contextlib
import ssl
import time

import mqtt5
import pytest
from mqtt5 import ConnAckReasonCode, DisconnectReasonCode, QoS, SubAckReasonCode

from tests.cloud.gateway.harness import client_context, wait_for_log
from tests.cloud.gateway.pki import DEVICE_SERIAL, OTHER_SERIAL, SERVICE_NAME
from tests.support.mqtt import RawClient

OWN = f"devices/{DEVICE_SERIAL}"


@pytest.fixture
def device(gateway, pki):
    client = RawClient(gateway.port, client_context(pki, pki.device))
    ack = client.connect(DEVICE_SERIAL, keep_alive=30)
    assert ack.reason_code == ConnAckReasonCode.SUCCESS
    yield client
    client.close()


def raw_subscribe(packet_id: int, patterns: list[str]) -> bytes:
    """A SUBSCRIBE built by hand (the codec's constructor refuses invalid filters)."""
    body = packet_id.to_bytes(2, "big") + b"\x00"
    for pattern in patterns:
        encoded = pattern.encode()
        body += len(encoded).to_bytes(2, "big") + encoded + b"\x01"
    assert len(body) < 128 * 128
    length = (
        bytes([len(body)]) if len(body) < 128 else bytes([len(body) % 128 | 0x80, len(body) // 128])
    )
    return b"\x82" + length + body


def subscribe(client, *patterns):
    client.send(raw_subscribe(7, list(patterns)))
    ack = client.recv()
    assert isinstance(ack, mqtt5.SubAckPacket) and ack.packet_id == 7
    return ack.reason_codes


def test_connack_advertises_the_limits(gateway, pki):
    client = RawClient(gateway.port, client_context(pki, pki.device))
    try:
        ack = client.connect(DEVICE_SERIAL, keep_alive=0, session_expiry_interval=3600)
    finally:
        client.close()
    assert ack.reason_code == ConnAckReasonCode.SUCCESS
    assert ack.max_qos == QoS.EXACTLY_ONCE
    assert ack.retain_available is False
    assert ack.max_packet_size == 16 * 1024
    assert ack.session_present is False
    assert ack.session_expiry_interval == 0  # no persistent sessions
    assert ack.server_keep_alive == 1200  # keep-alive 0 is replaced by the maximum
    assert ack.shared_subscription_available is True
    assert ack.subscription_id_available is True
    assert ack.topic_alias_max == 16


def test_client_id_must_equal_the_certificate_identity(gateway, pki, caplog):
    client = RawClient(gateway.port, client_context(pki, pki.device))
    try:
        ack = client.connect(OTHER_SERIAL)
        assert ack.reason_code == ConnAckReasonCode.CLIENT_ID_NOT_VALID
        assert client.wait_closed() == []
    finally:
        client.close()
    record = wait_for_log(caplog, "mqtt_client_id_mismatch")
    assert record.levelname == "WARNING"
    assert gateway.gateway.sessions() == []


def test_ping_subscribe_unsubscribe(device):
    device.send(mqtt5.PingReqPacket())
    assert isinstance(device.recv(), mqtt5.PingRespPacket)
    assert subscribe(device, f"{OWN}/commands/#") == [SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE]
    device.send(mqtt5.UnsubscribePacket(8, [f"{OWN}/commands/#", f"{OWN}/never"]))
    ack = device.recv()
    assert isinstance(ack, mqtt5.UnsubAckPacket)
    assert ack.reason_codes == [
        mqtt5.UnsubAckReasonCode.SUCCESS,
        mqtt5.UnsubAckReasonCode.NO_SUBSCRIPTION_EXISTED,
    ]


def test_qos1_publish_in_own_subtree_is_acknowledged_and_delivered(device):
    assert subscribe(device, f"{OWN}/echo") == [SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE]
    device.send(
        mqtt5.PublishPacket(
            f"{OWN}/echo",
            b"ping",
            qos=QoS.AT_LEAST_ONCE,
            packet_id=3,
            user_properties=[("tether-sender", "forged"), ("k", "v")],
        )
    )
    packets = [device.recv(), device.recv()]
    acks = [p for p in packets if isinstance(p, mqtt5.PubAckPacket)]
    delivered = [p for p in packets if isinstance(p, mqtt5.PublishPacket)]
    assert acks[0].packet_id == 3 and acks[0].reason_code == mqtt5.PubAckReasonCode.SUCCESS
    assert delivered[0].payload == b"ping"
    assert delivered[0].user_properties == [("k", "v"), ("tether-sender", DEVICE_SERIAL)]
    device.send(mqtt5.PubAckPacket(delivered[0].packet_id))


def test_publish_outside_own_subtree_qos1_gets_puback_not_authorized(device, caplog):
    device.send(
        mqtt5.PublishPacket(
            f"devices/{OTHER_SERIAL}/telemetry", b"x", qos=QoS.AT_LEAST_ONCE, packet_id=9
        )
    )
    ack = device.recv()
    assert isinstance(ack, mqtt5.PubAckPacket)
    assert ack.reason_code == mqtt5.PubAckReasonCode.NOT_AUTHORIZED
    # The session stays usable.
    device.send(mqtt5.PingReqPacket())
    assert isinstance(device.recv(), mqtt5.PingRespPacket)
    assert wait_for_log(caplog, "publish_not_authorized").levelname == "WARNING"


def test_publish_outside_own_subtree_qos0_gets_disconnect_not_authorized(device, caplog):
    device.send(mqtt5.PublishPacket("elsewhere/topic", b"x"))
    seen = device.wait_closed()
    assert len(seen) == 1 and isinstance(seen[0], mqtt5.DisconnectPacket)
    assert seen[0].reason_code == DisconnectReasonCode.NOT_AUTHORIZED
    assert wait_for_log(caplog, "publish_not_authorized").levelname == "WARNING"


def test_subscribe_reason_codes_per_filter_and_wildcard_abuse(device, caplog):
    codes = subscribe(
        device,
        f"{OWN}/commands/#",
        "#",
        "devices/#",
        "devices/+/telemetry",
        f"devices/{OTHER_SERIAL}/commands",
        f"{OWN}/a/#/b",
        f"$share/g/{OWN}/x",
        f"{OWN}/+/state",
    )
    assert codes == [
        SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE,
        SubAckReasonCode.NOT_AUTHORIZED,
        SubAckReasonCode.NOT_AUTHORIZED,
        SubAckReasonCode.NOT_AUTHORIZED,
        SubAckReasonCode.NOT_AUTHORIZED,
        SubAckReasonCode.TOPIC_FILTER_INVALID,
        SubAckReasonCode.NOT_AUTHORIZED,  # only services may share
        SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE,
    ]
    record = wait_for_log(caplog, "subscribe_not_authorized")
    assert record.levelname == "WARNING"


def test_service_may_read_all_devices_but_only_publish_commands(gateway, pki):
    service = RawClient(gateway.port, client_context(pki, pki.service))
    try:
        assert service.connect(SERVICE_NAME).reason_code == ConnAckReasonCode.SUCCESS
        assert subscribe(service, "devices/+/telemetry", "devices/#", "#", "other/#") == [
            SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE,
            SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE,
            SubAckReasonCode.NOT_AUTHORIZED,
            SubAckReasonCode.NOT_AUTHORIZED,
        ]
        service.send(
            mqtt5.PublishPacket(
                f"devices/{DEVICE_SERIAL}/telemetry", b"x", qos=QoS.AT_LEAST_ONCE, packet_id=1
            )
        )
        ack = service.recv()
        assert ack.reason_code == mqtt5.PubAckReasonCode.NOT_AUTHORIZED
    finally:
        service.close()


def test_oversized_packet_gets_disconnect_packet_too_large(device, caplog):
    # The gateway may close before the client has finished sending.
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        device.send(mqtt5.PublishPacket(f"{OWN}/big", b"x" * (20 * 1024)))
    seen = device.wait_closed()
    assert [type(p) for p in seen] == [mqtt5.DisconnectPacket]
    assert seen[0].reason_code == DisconnectReasonCode.PACKET_TOO_LARGE
    assert wait_for_log(caplog, "mqtt_packet_too_large").levelname == "WARNING"


def test_oversized_length_header_is_refused_before_the_body(device, caplog):
    # Only the fixed header of a 200 MB PUBLISH: refused without waiting for the body.
    device.send(bytes([0x30, 0x80, 0x80, 0x80, 0x60]))
    seen = device.wait_closed(timeout=5)
    assert seen[0].reason_code == DisconnectReasonCode.PACKET_TOO_LARGE
    wait_for_log(caplog, "mqtt_packet_too_large")


def test_malformed_bytes_after_connect_get_disconnect_malformed(device, caplog):
    device.send(b"\x00\x00")
    seen = device.wait_closed()
    assert [type(p) for p in seen] == [mqtt5.DisconnectPacket]
    assert seen[0].reason_code == DisconnectReasonCode.MALFORMED_PACKET
    assert wait_for_log(caplog, "mqtt_malformed_packet").levelname == "WARNING"


def test_malformed_connect_gets_connack_malformed_and_close(gateway, pki, caplog):
    client = RawClient(gateway.port, client_context(pki, pki.device))
    try:
        client.send(b"\x10\x03\x00\x01\xff")
        seen = client.wait_closed()
    finally:
        client.close()
    assert len(seen) == 1 and seen[0].reason_code == ConnAckReasonCode.MALFORMED_PACKET
    wait_for_log(caplog, "mqtt_malformed_packet")


def test_first_packet_must_be_connect(gateway, pki, caplog):
    client = RawClient(gateway.port, client_context(pki, pki.device))
    try:
        client.send(mqtt5.PingReqPacket())
        assert client.wait_closed() == []
    finally:
        client.close()
    wait_for_log(caplog, "mqtt_protocol_error")


def test_second_connect_is_a_protocol_error(device, caplog):
    device.send(mqtt5.ConnectPacket(DEVICE_SERIAL, clean_start=True))
    seen = device.wait_closed()
    assert seen[0].reason_code == DisconnectReasonCode.PROTOCOL_ERROR
    wait_for_log(caplog, "mqtt_protocol_error")


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (
            mqtt5.PublishPacket(f"{OWN}/t", b"x", retain=True),
            DisconnectReasonCode.RETAIN_NOT_SUPPORTED,
        ),
    ],
)
def test_unsupported_features_get_the_matching_disconnect(device, packet, reason):
    device.send(packet)
    seen = device.wait_closed()
    assert [p.reason_code for p in seen] == [reason]


def test_no_connect_within_the_timeout_closes(gateway_factory, pki, caplog):
    running = gateway_factory(connect_timeout=0.5)
    client = RawClient(running.port, client_context(pki, pki.device))
    started = time.monotonic()
    try:
        assert client.wait_closed(timeout=5) == []
    finally:
        client.close()
    assert time.monotonic() - started < 3
    assert wait_for_log(caplog, "mqtt_connect_timeout").levelname == "WARNING"


def test_silent_tcp_peer_is_closed_after_the_connect_timeout(gateway_factory, caplog):
    import socket

    running = gateway_factory(connect_timeout=0.5)
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as raw:
        assert raw.recv(1) == b""  # closed by the gateway, nothing sent
    assert wait_for_log(caplog, "handshake_deadline").levelname == "WARNING"


def test_keep_alive_silence_gets_disconnect(gateway, pki, caplog):
    client = RawClient(gateway.port, client_context(pki, pki.device))
    try:
        assert client.connect(DEVICE_SERIAL, keep_alive=1).reason_code == 0
        started = time.monotonic()
        seen = client.wait_closed(timeout=5)
        elapsed = time.monotonic() - started
    finally:
        client.close()
    assert [p.reason_code for p in seen] == [DisconnectReasonCode.KEEP_ALIVE_TIMEOUT]
    assert 1.2 < elapsed < 3
    wait_for_log(caplog, "mqtt_keep_alive_timeout")


def test_a_new_connection_takes_over_the_old_session(gateway, pki, device):
    newer = RawClient(gateway.port, client_context(pki, pki.device))
    try:
        assert newer.connect(DEVICE_SERIAL).reason_code == ConnAckReasonCode.SUCCESS
        seen = device.wait_closed()
        assert [p.reason_code for p in seen] == [DisconnectReasonCode.SESSION_TAKEN_OVER]
        newer.send(mqtt5.PingReqPacket())
        assert isinstance(newer.recv(), mqtt5.PingRespPacket)
    finally:
        newer.close()


def test_client_disconnect_ends_the_session(gateway, device):
    assert [i.name for i in gateway.gateway.sessions()] == [DEVICE_SERIAL]
    device.send(mqtt5.DisconnectPacket())
    assert device.wait_closed() == []
    deadline = time.monotonic() + 5
    while gateway.gateway.sessions() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gateway.gateway.sessions() == []


def test_messages_beyond_the_clients_receive_maximum_wait_for_its_puback(gateway, pki):
    client = RawClient(gateway.port, client_context(pki, pki.device))
    try:
        assert client.connect(DEVICE_SERIAL, receive_max=1).reason_code == 0
        assert subscribe(client, f"{OWN}/echo") == [SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE]
        for packet_id in (1, 2, 3):
            client.send(
                mqtt5.PublishPacket(
                    f"{OWN}/echo", b"%d" % packet_id, qos=QoS.AT_LEAST_ONCE, packet_id=packet_id
                )
            )
        seen = [client.recv() for _ in range(4)]  # three PUBACKs and one delivery
        delivered = [p for p in seen if isinstance(p, mqtt5.PublishPacket)]
        assert [p.payload for p in delivered] == [b"1"]  # the others wait for the window
        assert sum(isinstance(p, mqtt5.PubAckPacket) for p in seen) == 3
        payloads = [b"1"]
        for _ in range(2):
            client.send(mqtt5.PubAckPacket(delivered[-1].packet_id))
            delivered.append(client.recv())
            assert isinstance(delivered[-1], mqtt5.PublishPacket)
            payloads.append(delivered[-1].payload)
        assert payloads == [b"1", b"2", b"3"]  # in order, none lost
        assert gateway.gateway.limits_report().counters["receive_maximum_wait"] == 2
    finally:
        client.close()


def test_will_is_published_on_abnormal_close_with_the_sender_attribution(gateway, pki):
    service = RawClient(gateway.port, client_context(pki, pki.service))
    device = RawClient(gateway.port, client_context(pki, pki.device))
    try:
        assert service.connect(SERVICE_NAME).reason_code == 0
        assert subscribe(service, "devices/+/status") == [1]
        will = mqtt5.Will(f"{OWN}/status", payload=b"offline", qos=QoS.AT_LEAST_ONCE)
        assert device.connect(DEVICE_SERIAL, will=will).reason_code == 0
        device.close()  # no DISCONNECT: the Will goes out
        message = service.recv()
        assert isinstance(message, mqtt5.PublishPacket)
        assert (message.topic, message.payload) == (f"{OWN}/status", b"offline")
        assert ("tether-sender", DEVICE_SERIAL) in message.user_properties
    finally:
        service.close()
        device.close()


def test_will_outside_the_own_subtree_refuses_the_connect(gateway, pki, caplog):
    client = RawClient(gateway.port, client_context(pki, pki.device))
    try:
        will = mqtt5.Will(f"devices/{OTHER_SERIAL}/status", payload=b"x")
        ack = client.connect(DEVICE_SERIAL, will=will)
        assert ack.reason_code == ConnAckReasonCode.NOT_AUTHORIZED
        assert client.wait_closed() == []
    finally:
        client.close()
    wait_for_log(caplog, "publish_not_authorized")
