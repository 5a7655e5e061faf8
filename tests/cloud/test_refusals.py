"""Every way a client is refused by the registry-backed cloud, each with its logged reason code.

The client is a raw MQTT 5 client over stdlib ``ssl`` (so the test sees the CONNACK or the
closed connection exactly); the reason is read from the gateway's log (``tether_code``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mqtt5
import pytest
from cryptography import x509
from mqtt5 import ConnAckReasonCode

from tests.cloud.conftest import ACTOR, Cloud
from tests.cloud.gateway.harness import wait_for_log
from tests.support.mqtt import RawClient
from tests.support.pki import Issued, self_signed_leaf
from tether.cloud.registry import DeviceStatus
from tether.pki import sha256_fingerprint

SERIAL = "CON-100001"


def _unregistered_ca(cloud: Cloud, tmp_path: Path) -> Issued:
    return cloud.pki.device(SERIAL, ca=cloud.pki.stranger_ca).write(tmp_path, SERIAL)


def _self_signed_with_real_serial(cloud: Cloud, tmp_path: Path) -> Issued:
    cloud.console_device(SERIAL)  # the real device exists and is enabled
    tmp_path.mkdir(parents=True, exist_ok=True)
    return self_signed_leaf(SERIAL).write(tmp_path, "impostor")


def _revoked(cloud: Cloud, tmp_path: Path) -> Issued:
    issued = cloud.console_device(SERIAL)
    cloud.registry.revoke_certificate(
        sha256_fingerprint(issued.certificate), reason=x509.ReasonFlags.superseded, actor=ACTOR
    )
    return issued


def _expired(cloud: Cloud, tmp_path: Path) -> Issued:
    return cloud.pki.expired_device(SERIAL).write(tmp_path, "expired")


def _disabled(cloud: Cloud, tmp_path: Path) -> Issued:
    issued = cloud.console_device(SERIAL)
    cloud.registry.set_device_status(SERIAL, DeviceStatus.DISABLED, actor=ACTOR)
    return issued


def _unknown_under_a_ca_without_jit(cloud: Cloud, tmp_path: Path) -> Issued:
    return cloud.pki.device(SERIAL, ca=cloud.pki.device_ca).write(
        tmp_path, SERIAL
    )  # never registered


# (how the certificate is made, the logged code, the CONNACK reason or None for a TLS refusal)
CASES: dict[str, tuple[Callable[[Cloud, Path], Issued], str, ConnAckReasonCode | None]] = {
    "unregistered-ca": (_unregistered_ca, "ca_not_registered", None),
    "self-signed-real-serial": (_self_signed_with_real_serial, "ca_not_registered", None),
    "revoked": (_revoked, "certificate_revoked", ConnAckReasonCode.BAD_USER_NAME_OR_PASSWORD),
    "expired": (_expired, "certificate_expired", None),
    "disabled": (_disabled, "device_disabled", ConnAckReasonCode.NOT_AUTHORIZED),
    "unknown-no-jit": (
        _unknown_under_a_ca_without_jit,
        "certificate_unknown",
        ConnAckReasonCode.NOT_AUTHORIZED,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_with_its_reason(
    case: str, cloud: Cloud, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make, code, connack_reason = CASES[case]
    identity = make(cloud, tmp_path / "client")
    client = RawClient(cloud.port, cloud.tls_context(identity))
    try:
        connack = client.connect(SERIAL)
        if connack_reason is None:
            assert connack is None  # refused in the TLS handshake itself
        else:
            assert connack is not None
            assert (connack.reason_code, connack.reason_str) == (connack_reason, code)
        assert client.wait_closed(timeout=5) == []
    finally:
        client.close()
    assert wait_for_log(caplog, code).levelname == "WARNING"
    assert cloud.service.gateway.sessions() == []
    if case == "unknown-no-jit":
        # A refused unknown unit is not registered on the way.
        assert cloud.registry.list_devices(search=SERIAL).total == 0


def test_client_id_must_equal_the_certificate_serial(
    cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    cloud.console_device("CON-100002")
    identity = cloud.console_device(SERIAL)
    client = RawClient(cloud.port, cloud.tls_context(identity))
    try:
        connack = client.connect("CON-100002")  # another, real, device's id
        assert connack is not None
        assert connack.reason_code == ConnAckReasonCode.CLIENT_ID_NOT_VALID
    finally:
        client.close()
    wait_for_log(caplog, "mqtt_client_id_mismatch")
    assert cloud.service.gateway.sessions() == []


def test_a_device_cannot_publish_outside_its_own_topics(
    cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    identity = cloud.console_device(SERIAL)
    client = RawClient(cloud.port, cloud.tls_context(identity))
    try:
        assert client.connect(SERIAL).reason_code == ConnAckReasonCode.SUCCESS
        client.send(
            mqtt5.PublishPacket(
                "devices/CON-100002/telemetry", b"x", qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=1
            )
        )
        ack = client.recv()
        assert isinstance(ack, mqtt5.PubAckPacket)
        assert ack.reason_code == mqtt5.PubAckReasonCode.NOT_AUTHORIZED
    finally:
        client.close()
    assert wait_for_log(caplog, "publish_not_authorized").identity == SERIAL
