"""MQTT 3.1.1 interop with clients no one here wrote: mosquitto_pub/sub -V mqttv311, paho.

A 3.1.1 device and an MQTT 5 service exchange telemetry and commands, each side learning
the other's certificate identity: the MQTT 5 side from ``tether-sender``, the 3.1.1 side
from a ``$sender/<kind>/<name>/...`` subscription.
"""

from __future__ import annotations

import subprocess

import paho.mqtt.client as paho
import pytest

from tests.cloud.gateway.harness import mosquitto_args, wait_for_log
from tests.cloud.gateway.pki import DEVICE_SERIAL, SERVICE_NAME
from tests.cloud.gateway.test_interop import wait_until
from tests.support.mqtt import paho_connect

OWN = f"devices/{DEVICE_SERIAL}"
TELEMETRY = f"{OWN}/telemetry"


def mosquitto_pub(gateway, pki, topic: str, *extra: str, client_id: str = DEVICE_SERIAL):
    return subprocess.run(
        [
            "mosquitto_pub",
            *mosquitto_args(pki, pki.device, gateway.port, client_id, "mqttv311"),
            "-t", topic, *extra,
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )  # fmt: skip


@pytest.mark.parametrize("qos", ["0", "1", "2"])
def test_mosquitto_311_telemetry_reaches_an_mqtt5_service_attributed(gateway, pki, qos):
    service = paho_connect(gateway.port, pki.root.cert_path, pki.service, SERVICE_NAME)
    try:
        assert [c.value for c in service.subscribe("devices/+/telemetry", qos=2)] == [2]
        result = mosquitto_pub(gateway, pki, TELEMETRY, "-m", "temp=21.5", "-q", qos)
        assert result.returncode == 0, result.stderr
        message = service.messages.get(timeout=10)
    finally:
        service.stop()
    assert (message.topic, message.payload, message.qos) == (TELEMETRY, b"temp=21.5", int(qos))
    assert message.properties.UserProperty == [("tether-sender", DEVICE_SERIAL)]


def test_mosquitto_sub_311_device_gets_commands_with_the_sender_in_the_topic(gateway, pki):
    subscriber = subprocess.Popen(
        [
            "mosquitto_sub",
            *mosquitto_args(pki, pki.device, gateway.port, DEVICE_SERIAL, "mqttv311"),
            "-t", f"$sender/service/+/{OWN}/commands/#",
            "-q", "2", "-C", "1", "-W", "15", "-F", "%t|%p|%q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: gateway.gateway.broker.subscription_count() == 1)
        service = paho_connect(gateway.port, pki.root.cert_path, pki.service, SERVICE_NAME)
        try:
            info = service.client.publish(f"{OWN}/commands/reboot", b"now", qos=2)
            info.wait_for_publish(timeout=10)
        finally:
            service.stop()
        out, err = subscriber.communicate(timeout=15)
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait(5)
    assert subscriber.returncode == 0, err
    assert out.strip() == f"$sender/service/{SERVICE_NAME}/{OWN}/commands/reboot|now|2"


def test_paho_311_service_learns_the_device_from_the_topic(gateway, pki):
    service = paho_connect(
        gateway.port, pki.root.cert_path, pki.service, SERVICE_NAME, paho.MQTTv311
    )
    try:
        codes = service.subscribe("$sender/device/+/devices/+/telemetry", qos=1)
        assert [c.value for c in codes] == [1]
        result = mosquitto_pub(gateway, pki, TELEMETRY, "-m", "42", "-q", "1")
        assert result.returncode == 0, result.stderr
        message = service.messages.get(timeout=10)
    finally:
        service.stop()
    assert message.topic == f"$sender/device/{DEVICE_SERIAL}/{TELEMETRY}"
    assert message.payload == b"42"


def test_paho_311_device_and_mqtt5_service_exchange_telemetry_and_commands(gateway, pki):
    service = paho_connect(gateway.port, pki.root.cert_path, pki.service, SERVICE_NAME)
    device = paho_connect(
        gateway.port, pki.root.cert_path, pki.device, DEVICE_SERIAL, paho.MQTTv311
    )
    try:
        assert [c.value for c in service.subscribe("devices/+/telemetry", qos=2)] == [2]
        assert [c.value for c in device.subscribe(f"$sender/+/+/{OWN}/commands/#", 2)] == [2]
        sent = device.client.publish(TELEMETRY, b"t=20", qos=2)
        sent.wait_for_publish(timeout=10)
        telemetry = service.messages.get(timeout=10)
        assert telemetry.properties.UserProperty == [("tether-sender", DEVICE_SERIAL)]
        sent = service.client.publish(f"{OWN}/commands/set", b"t=18", qos=1)
        sent.wait_for_publish(timeout=10)
        command = device.messages.get(timeout=10)
    finally:
        device.stop()
        service.stop()
    assert telemetry.payload == b"t=20"
    assert command.topic == f"$sender/service/{SERVICE_NAME}/{OWN}/commands/set"
    assert command.payload == b"t=18"


def test_a_311_client_cannot_forge_a_sender_topic(gateway, pki, caplog):
    service = paho_connect(
        gateway.port, pki.root.cert_path, pki.service, SERVICE_NAME, paho.MQTTv311
    )
    try:
        assert [c.value for c in service.subscribe("$sender/#", qos=1)] == [0x80]
        service.subscribe(f"$sender/+/+/{OWN}/#", qos=1)
        forged = f"$sender/service/{SERVICE_NAME}/{OWN}/commands/x"
        result = mosquitto_pub(gateway, pki, forged, "-m", "forged", "-q", "1")
        assert result.returncode != 0  # the gateway closed the connection
        wait_for_log(caplog, "publish_not_authorized")
        assert service.messages.empty()
    finally:
        service.stop()


def test_mosquitto_311_with_the_wrong_client_id_is_rejected(gateway, pki, caplog):
    result = mosquitto_pub(gateway, pki, TELEMETRY, "-m", "x", client_id="not-my-serial")
    assert result.returncode != 0
    assert "identifier rejected" in (result.stderr + result.stdout).lower()
    wait_for_log(caplog, "mqtt_client_id_mismatch")
