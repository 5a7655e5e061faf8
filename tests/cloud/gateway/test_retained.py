"""Retained messages through the gateway, stored in a real registry database (SQLite file).

Set, replace, clear, the receive policy, Retain Handling, the per-identity bound, MQTT 3.1.1
clients no one here wrote, and a gateway restart on the same database.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import mqtt5
import pytest
from mqtt5 import QoS, TopicFilter

from tests.cloud.gateway.harness import GatewayThread, client_context, mosquitto_args
from tests.cloud.gateway.pki import DEVICE_SERIAL, OTHER_SERIAL, SERVICE_NAME
from tests.cloud.gateway.test_mqtt5_strict import connect
from tests.support.mqtt import RawClient
from tether.cloud.gateway.retained import RetainedMessages
from tether.cloud.gateway.stores import StoreLimits
from tether.cloud.registry import Registry
from tether.cloud.registry.mqtt_state import RegistryMqttState

OWN = f"devices/{DEVICE_SERIAL}"
STATUS = f"{OWN}/status"


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Registry]:
    registry = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}")
    yield registry
    registry.close()


def with_retained(running: GatewayThread, registry: Registry, **limits: int) -> RetainedMessages:
    retained = RetainedMessages(RegistryMqttState.on(registry, StoreLimits(**limits)))
    running.gateway.broker.retained = retained
    return retained


@pytest.fixture
def retained_gateway(gateway, database) -> Iterator[GatewayThread]:
    retained = with_retained(gateway, database)
    yield gateway
    retained.close()


def publish(client: RawClient, topic: str, payload: bytes, packet_id: int = 1):
    client.send(
        mqtt5.PublishPacket(topic, payload, qos=QoS.AT_LEAST_ONCE, packet_id=packet_id, retain=True)
    )
    ack = client.recv()
    assert isinstance(ack, mqtt5.PubAckPacket)
    return ack.reason_code


def subscribe(client: RawClient, pattern: str, retain_handling=mqtt5.RetainHandling.SEND_ALWAYS):
    client.send(
        mqtt5.SubscribePacket(
            5,
            [
                # Retain As Published 0 (the mqtt5 library's default is 1): live RETAIN 0.
                TopicFilter(
                    pattern,
                    max_qos=QoS.AT_LEAST_ONCE,
                    retain_handling=retain_handling,
                    retain_as_published=False,
                )
            ],
        )
    )
    ack = client.recv()
    assert isinstance(ack, mqtt5.SubAckPacket)
    return [int(code) for code in ack.reason_codes]


def retained_for(client: RawClient, count: int) -> list[mqtt5.PublishPacket]:
    """The next ``count`` PUBLISH packets (each within the harness timeout: the retained
    lookup runs on a thread, slow under load), then no more for a moment."""
    seen = []
    for _ in range(count):
        packet = client.recv()
        assert isinstance(packet, mqtt5.PublishPacket), packet
        seen.append(packet)
        if int(packet.qos):
            client.send(mqtt5.PubAckPacket(packet.packet_id))
    with pytest.raises(TimeoutError):
        extra = client.recv(timeout=0.5)
        raise AssertionError(f"one more than expected: {extra}")
    return seen


def test_set_replace_and_clear(retained_gateway, pki):
    device = RawClient(retained_gateway.port, client_context(pki, pki.device))
    assert device.connect(DEVICE_SERIAL).retain_available is True
    try:
        assert publish(device, STATUS, b"on") == mqtt5.PubAckReasonCode.NO_MATCHING_SUBSCRIBERS
        publish(device, STATUS, b"off", 2)
        service = connect(retained_gateway, pki, pki.service, SERVICE_NAME)
        assert subscribe(service, "devices/+/status") == [1]
        [got] = retained_for(service, 1)
        assert (got.topic, got.payload, got.retain) == (STATUS, b"off", True)
        assert got.user_properties == [("tether-sender", DEVICE_SERIAL)]
        publish(device, STATUS, b"", 3)  # an empty payload clears it
        live = retained_for(service, 1)
        assert [(p.payload, p.retain) for p in live] == [(b"", False)]  # live: RETAIN 0
        service.close()
        late = connect(retained_gateway, pki, pki.service, SERVICE_NAME)
        assert subscribe(late, "devices/#") == [1]
        assert retained_for(late, 0) == []
        late.close()
    finally:
        device.close()


def test_the_receive_policy_and_retain_handling_apply(retained_gateway, pki):
    service = connect(retained_gateway, pki, pki.service, SERVICE_NAME)
    publish(service, f"{OWN}/commands/config", b"v2")
    service.close()
    other = connect(retained_gateway, pki, pki.other_device, OTHER_SERIAL)
    try:
        assert subscribe(other, f"{OWN}/commands/#") == [0x87]
        assert retained_for(other, 0) == []
    finally:
        other.close()
    device = connect(retained_gateway, pki)
    try:
        assert subscribe(device, f"{OWN}/commands/#", mqtt5.RetainHandling.SEND_NEVER) == [1]
        assert retained_for(device, 0) == []
        assert subscribe(
            device, f"{OWN}/+/config", mqtt5.RetainHandling.SEND_IF_SUBSCRIPTION_NOT_EXISTS
        ) == [1]
        assert [p.payload for p in retained_for(device, 1)] == [b"v2"]
        assert subscribe(
            device, f"{OWN}/+/config", mqtt5.RetainHandling.SEND_IF_SUBSCRIPTION_NOT_EXISTS
        ) == [1]
        assert retained_for(device, 0) == []  # not new any more
        assert subscribe(device, f"$sender/service/+/{OWN}/commands/#") == [1]
        [viewed] = retained_for(device, 1)
        assert viewed.topic == f"$sender/service/{SERVICE_NAME}/{OWN}/commands/config"
    finally:
        device.close()


def test_the_per_identity_bound_refuses_with_0x97_and_still_delivers(gateway, pki, database):
    retained = with_retained(gateway, database, max_retained_per_identity=1)
    service = connect(gateway, pki, pki.service, SERVICE_NAME)
    device = connect(gateway, pki)
    try:
        assert subscribe(service, "devices/+/+") == [1]
        publish(device, STATUS, b"1")
        assert publish(device, f"{OWN}/other", b"2", 2) == mqtt5.PubAckReasonCode.QUOTA_EXCEEDED
        assert [p.payload for p in retained_for(service, 2)] == [b"1", b"2"]
        assert publish(device, STATUS, b"3", 3) == mqtt5.PubAckReasonCode.SUCCESS  # a replace
    finally:
        device.close()
        service.close()
        retained.close()


def test_mosquitto_311_sets_and_reads_a_retained_message(retained_gateway, pki):
    result = subprocess.run(
        [
            "mosquitto_pub",
            *mosquitto_args(pki, pki.device, retained_gateway.port, DEVICE_SERIAL, "mqttv311"),
            "-t", STATUS, "-m", "online", "-q", "1", "-r",
        ],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    read = subprocess.run(
        [
            "mosquitto_sub",
            *mosquitto_args(pki, pki.service, retained_gateway.port, SERVICE_NAME, "mqttv311"),
            "-t", "$sender/device/+/devices/+/status", "-q", "1", "-C", "1", "-W", "10",
            "-F", "%t|%p|%r",
        ],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == f"$sender/device/{DEVICE_SERIAL}/{STATUS}|online|1"


def test_retained_messages_survive_a_gateway_restart(gateway_factory, pki, database):
    first = gateway_factory()
    retained = with_retained(first, database)
    device = connect(first, pki)
    publish(device, STATUS, b"kept")
    device.close()
    first.close()
    retained.close()
    second = gateway_factory()
    retained = with_retained(second, database)
    service = connect(second, pki, pki.service, SERVICE_NAME)
    try:
        assert subscribe(service, "devices/+/status") == [1]
        assert [p.payload for p in retained_for(service, 1)] == [b"kept"]
    finally:
        service.close()
        retained.close()


def test_retain_as_published_keeps_the_flag_on_live_messages(retained_gateway, pki):
    """MQTT 5 3.3.1.3: RETAIN as published only for a subscription that asks; else 0."""
    service = connect(retained_gateway, pki, pki.service, SERVICE_NAME)
    device = connect(retained_gateway, pki)
    try:
        service.send(
            mqtt5.SubscribePacket(5, [
                TopicFilter("devices/+/state", max_qos=QoS.AT_LEAST_ONCE,
                            retain_as_published=True,
                            retain_handling=mqtt5.RetainHandling.SEND_NEVER),
                TopicFilter("devices/+/status", max_qos=QoS.AT_LEAST_ONCE,
                            retain_as_published=False,
                            retain_handling=mqtt5.RetainHandling.SEND_NEVER),
            ])
        )  # fmt: skip
        assert isinstance(service.recv(), mqtt5.SubAckPacket)
        for number, topic in enumerate(("state", "status"), 1):
            device.send(
                mqtt5.PublishPacket(f"devices/{DEVICE_SERIAL}/{topic}", b"on",
                                    qos=QoS.AT_LEAST_ONCE, packet_id=number, retain=True)
            )  # fmt: skip
            assert isinstance(device.recv(), mqtt5.PubAckPacket)
        got = {p.topic.rsplit("/", 1)[1]: p.retain for p in retained_for(service, 2)}
        assert got == {"state": True, "status": False}
    finally:
        service.close()
        device.close()
