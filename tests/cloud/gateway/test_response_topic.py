"""A device cannot steer a service's reply at another device through the Response Topic.

Real MQTT 5 clients (paho-mqtt v2): a device's Response Topic must be a topic the device may
publish to itself; otherwise its PUBLISH is refused like one outside the policy (PUBACK 0x87 at
QoS 1, DISCONNECT 0x87 at QoS 0) and nothing is routed.
"""

from __future__ import annotations

import queue

import pytest
from mqtt5 import ConnAckReasonCode, Will
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.cloud.gateway.harness import TIMEOUT, client_context, wait_for_log
from tests.cloud.gateway.pki import DEVICE_SERIAL, OTHER_SERIAL, SERVICE_NAME
from tests.support.mqtt import PahoClient, RawClient, paho_connect

TELEMETRY = f"devices/{DEVICE_SERIAL}/telemetry"
VICTIM_COMMAND = f"devices/{OTHER_SERIAL}/commands/unlock"


def request_properties(response_topic: str, correlation: bytes = b"req-1") -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    properties.ResponseTopic = response_topic
    properties.CorrelationData = correlation
    return properties


def publish_acks(client: PahoClient) -> queue.Queue[int]:
    acks: queue.Queue[int] = queue.Queue()
    client.client.on_publish = lambda _c, _u, _mid, reason, _p: acks.put(reason.value)
    return acks


@pytest.fixture
def service(gateway, pki):
    client = paho_connect(gateway.port, pki.root.cert_path, pki.service, SERVICE_NAME)
    assert [c.value for c in client.subscribe("devices/+/telemetry")] == [1]
    yield client
    client.stop()


def test_a_response_topic_at_another_device_gets_puback_not_authorized(
    gateway, pki, service, caplog
):
    device = paho_connect(gateway.port, pki.root.cert_path, pki.device, DEVICE_SERIAL)
    acks = publish_acks(device)
    try:
        device.client.publish(
            TELEMETRY, b"reply to this", qos=1, properties=request_properties(VICTIM_COMMAND)
        )
        assert acks.get(timeout=TIMEOUT) == 0x87
    finally:
        device.stop()
    with pytest.raises(queue.Empty):
        service.messages.get(timeout=0.5)  # nothing was routed
    record = wait_for_log(caplog, "response_topic_not_authorized")
    assert VICTIM_COMMAND in record.getMessage()


def test_a_response_topic_at_another_device_at_qos0_ends_the_session(gateway, pki, service, caplog):
    device = paho_connect(gateway.port, pki.root.cert_path, pki.device, DEVICE_SERIAL)
    try:
        device.client.publish(
            TELEMETRY, b"reply to this", qos=0, properties=request_properties(VICTIM_COMMAND)
        )
        reason = device.disconnects.get(timeout=TIMEOUT)
    finally:
        device.client.loop_stop()
    assert reason.value == 0x87
    with pytest.raises(queue.Empty):
        service.messages.get(timeout=0.5)
    wait_for_log(caplog, "response_topic_not_authorized")


def test_a_response_topic_in_the_own_subtree_reaches_the_service_intact(gateway, pki, service):
    own_reply = f"devices/{DEVICE_SERIAL}/replies/1"
    device = paho_connect(gateway.port, pki.root.cert_path, pki.device, DEVICE_SERIAL)
    acks = publish_acks(device)
    try:
        device.client.publish(
            TELEMETRY, b"ok", qos=1, properties=request_properties(own_reply, b"\x00\x01")
        )
        assert acks.get(timeout=TIMEOUT) == 0
        message = service.messages.get(timeout=TIMEOUT)
    finally:
        device.stop()
    assert message.properties.ResponseTopic == own_reply
    assert message.properties.CorrelationData == b"\x00\x01"


def test_a_will_with_a_foreign_response_topic_refuses_the_connect(gateway, pki, caplog):
    client = RawClient(gateway.port, client_context(pki, pki.device))
    try:
        will = Will(
            f"devices/{DEVICE_SERIAL}/status", payload=b"gone", response_topic=VICTIM_COMMAND
        )
        ack = client.connect(DEVICE_SERIAL, will=will)
        assert ack.reason_code == ConnAckReasonCode.NOT_AUTHORIZED
    finally:
        client.close()
    wait_for_log(caplog, "response_topic_not_authorized")
