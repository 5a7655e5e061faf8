"""The device connects over real mutual TLS to a real mosquitto, with a key file or a token
(SoftHSM2, and for tests marked ``tpm`` also a key in a simulated TPM 2.0)."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.device.broker import Broker
from tests.device.conftest import DevicePKI, TokenDevice
from tests.device.helpers import TIMEOUT, endpoint, file_identity, token_key
from tether.device import DeviceClient, DeviceIdentity
from tether.device.preflight import probe_server


def _start_subscriber(pki: DevicePKI, broker: Broker, topic: str) -> subprocess.Popen[str]:
    """mosquitto_sub as a second device; returns once the broker has acknowledged its SUBSCRIBE."""
    sub = subprocess.Popen(
        [
            "mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-V", "5",
            "-i", "SN-SUB-0001", "--cafile", str(pki.cloud_ca), "--cert",
            str(pki.subscriber_cert), "--key", str(pki.subscriber_key), "-t", topic, "-q", "1",
            "-C", "1", "-W", "20",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    # mosquitto_sub buffers its own output in a pipe; the broker's log says when it is ready.
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and sub.poll() is None:
        if "Sending SUBACK to SN-SUB-0001" in broker.log_text():
            return sub
        time.sleep(0.05)
    sub.kill()
    seen = sub.communicate(timeout=5)[0]
    raise AssertionError(f"mosquitto_sub never subscribed: {seen}")


def test_file_key_device_publishes_qos1_and_mosquitto_sub_receives(
    pki: DevicePKI, broker: Broker
) -> None:
    topic = "devices/SN-FILE-0001/telemetry"
    sub = _start_subscriber(pki, broker, topic)
    try:
        with DeviceClient(file_identity(pki), endpoint(pki, broker)) as device:
            verdict = device.connect(TIMEOUT)
            assert verdict.reason_name == "SUCCESS"
            assert verdict.client_id == "SN-FILE-0001"
            ack = device.publish(topic, b"temperature=21.5", qos=1, timeout=TIMEOUT)
            assert ack.reason_code == 0 and ack.reason_name == "SUCCESS"
        out, _ = sub.communicate(timeout=TIMEOUT)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(timeout=5)
    assert "temperature=21.5" in out
    # mosquitto took the identity from the certificate (use_identity_as_username).
    assert "as SN-FILE-0001" in broker.log_text()
    assert "u'SN-FILE-0001'" in broker.log_text()


def test_file_key_device_speaks_tls13_with_awscrt(pki: DevicePKI, tls13_broker: Broker) -> None:
    # The broker accepts TLS 1.3 only, so a successful connect proves awscrt negotiated it.
    with DeviceClient(file_identity(pki), endpoint(pki, tls13_broker)) as device:
        assert device.connect(TIMEOUT).reason_code == 0
    facts = probe_server(file_identity(pki), endpoint(pki, tls13_broker), TIMEOUT)
    assert facts.tls_version == "TLSv1.3"
    assert facts.trusted


def test_device_receives_what_it_subscribed_to(pki: DevicePKI, broker: Broker) -> None:
    with DeviceClient(file_identity(pki), endpoint(pki, broker)) as device:
        device.connect(TIMEOUT)
        granted = device.subscribe("devices/SN-FILE-0001/echo", qos=1, timeout=TIMEOUT)
        assert granted.reason_names == ("GRANTED_QOS_1",)
        device.publish("devices/SN-FILE-0001/echo", "ping", timeout=TIMEOUT)
        message = device.receive(TIMEOUT)
    assert message.topic == "devices/SN-FILE-0001/echo"
    assert message.payload == b"ping"


@pytest.mark.tpm
def test_token_key_completes_mutual_tls_12_through_awscrt_pkcs11(
    pki: DevicePKI, broker: Broker, token_device: TokenDevice
) -> None:
    identity = DeviceIdentity.load(token_device.cert, token_key(token_device))
    assert identity.serial == "SN-HSM-0001"
    with DeviceClient(identity, endpoint(pki, broker)) as device:
        verdict = device.connect(TIMEOUT)
        assert verdict.reason_name == "SUCCESS"
        assert verdict.client_id == "SN-HSM-0001"
        ack = device.publish("devices/SN-HSM-0001/telemetry", b"hello", timeout=TIMEOUT)
        # A real PUBACK from mosquitto: accepted, nobody subscribed (16, a success code).
        assert (ack.reason_code, ack.reason_name) == (16, "NO_MATCHING_SUBSCRIBERS")
        assert device.key_facts is not None
        assert device.key_facts.facts["CKA_SENSITIVE"] == "True"
        assert device.key_facts.facts["CKA_EXTRACTABLE"] == "False"
        assert device.key_facts.facts["reading CKA_VALUE"].startswith("refused")
    assert "as SN-HSM-0001" in broker.log_text()
    facts = probe_server(identity, endpoint(pki, broker), TIMEOUT)
    assert facts.tls_version == "TLSv1.2"
    assert facts.cipher is not None and "ECDHE-ECDSA" in facts.cipher


def test_token_key_cannot_use_a_tls13_only_cloud(
    pki: DevicePKI, tls13_broker: Broker, token_device: TokenDevice
) -> None:
    # awscrt's limit with PKCS#11 keys is TLS 1.2: a TLS 1.3-only cloud refuses the handshake.
    from tether.errors import TetherError

    identity = DeviceIdentity.load(token_device.cert, token_key(token_device))
    device = DeviceClient(identity, endpoint(pki, tls13_broker))
    try:
        device.connect(TIMEOUT)
    except TetherError as exc:
        assert exc.code == "tls_handshake_failed"
        assert "TLS 1.2" in exc.message
    else:
        device.disconnect()
        raise AssertionError("a PKCS#11 key connected to a TLS 1.3-only broker")
