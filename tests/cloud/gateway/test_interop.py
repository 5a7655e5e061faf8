"""Real clients interoperate: paho-mqtt v2 (MQTT 5) and mosquitto_pub / mosquitto_sub."""

from __future__ import annotations

import subprocess
import time

from tests.cloud.gateway.harness import mosquitto_args, wait_for_log
from tests.cloud.gateway.pki import DEVICE_SERIAL, OTHER_SERIAL, SERVICE_NAME
from tests.support.mqtt import paho_connect, publish_properties


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_device_telemetry_reaches_a_service_attributed_to_the_certificate(gateway, pki):
    service = paho_connect(gateway.port, pki.root.cert_path, pki.service, SERVICE_NAME)
    try:
        assert [c.value for c in service.subscribe("devices/+/telemetry")] == [1]
        result = subprocess.run(
            [
                "mosquitto_pub",
                *mosquitto_args(pki, pki.device, gateway.port, DEVICE_SERIAL),
                "-t", f"devices/{DEVICE_SERIAL}/telemetry",
                "-m", "temp=21.5",
                "-q", "1",
                # A forged attribution: the gateway must strip it.
                "-D", "publish", "user-property", "tether-sender", "someone-else",
                "-D", "publish", "user-property", "unit", "celsius",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        message = service.messages.get(timeout=10)
    finally:
        service.stop()
    assert message.topic == f"devices/{DEVICE_SERIAL}/telemetry"
    assert message.payload == b"temp=21.5"
    assert message.properties.UserProperty == [
        ("unit", "celsius"),
        ("tether-sender", DEVICE_SERIAL),
    ]


def test_service_command_reaches_the_device(gateway, pki):
    subscriber = subprocess.Popen(
        [
            "mosquitto_sub",
            *mosquitto_args(pki, pki.device, gateway.port, DEVICE_SERIAL),
            "-t", f"devices/{DEVICE_SERIAL}/commands/#",
            "-q", "1", "-C", "1", "-W", "15",
            "-F", "%t|%p|%P",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: gateway.gateway.broker.subscription_count() == 1)
        service = paho_connect(gateway.port, pki.root.cert_path, pki.service, SERVICE_NAME)
        try:
            info = service.client.publish(
                f"devices/{DEVICE_SERIAL}/commands/reboot",
                b"now",
                qos=1,
                properties=publish_properties(reason="maintenance"),
            )
            info.wait_for_publish(timeout=10)
            assert info.rc == 0
        finally:
            service.stop()
        out, err = subscriber.communicate(timeout=15)
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait(5)
    assert subscriber.returncode == 0, err
    topic, payload, properties = out.strip().split("|")
    assert topic == f"devices/{DEVICE_SERIAL}/commands/reboot"
    assert payload == "now"
    assert f"tether-sender:{SERVICE_NAME}" in properties
    assert "reason:maintenance" in properties


def test_a_device_cannot_read_another_devices_commands(gateway, pki):
    other = paho_connect(gateway.port, pki.root.cert_path, pki.other_device, OTHER_SERIAL)
    try:
        codes = other.subscribe(f"devices/{DEVICE_SERIAL}/commands/#")
    finally:
        other.stop()
    assert [c.value for c in codes] == [0x87]


def test_mosquitto_with_the_wrong_client_id_is_refused(gateway, pki, caplog):
    result = subprocess.run(
        [
            "mosquitto_pub",
            *mosquitto_args(pki, pki.device, gateway.port, "not-my-serial"),
            "-t", f"devices/{DEVICE_SERIAL}/telemetry", "-m", "x",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )  # fmt: skip
    assert result.returncode != 0
    assert "identifier" in (result.stderr + result.stdout).lower()
    wait_for_log(caplog, "mqtt_client_id_mismatch")


def test_openssl_s_client_tls12_ecdhe_ecdsa_aes_gcm_is_accepted(gateway, pki, caplog):
    # The suite awscrt negotiates with a PKCS#11 key: TLS 1.2 ECDHE-ECDSA-AES-GCM.
    result = subprocess.run(
        [
            "openssl", "s_client", "-connect", f"127.0.0.1:{gateway.port}",
            "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256",
            "-CAfile", str(pki.root.cert_path),
            "-cert", str(pki.device.cert_path), "-key", str(pki.device.key_path),
            "-verify_return_error",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
    )  # fmt: skip
    assert "Verify return code: 0 (ok)" in result.stdout, result.stdout + result.stderr
    assert "ECDHE-ECDSA-AES128-GCM-SHA256" in result.stdout
    record = wait_for_log(caplog, "tls_established")
    assert "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256" in record.getMessage()
    wait_for_log(caplog, "handshake_authorized")
