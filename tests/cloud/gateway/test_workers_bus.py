"""Two gateways joined by the in-process bus behave as two workers of one cloud.

The same rules the two-host test checks over NATS (tests/cloud/test_cluster.py), here without
a server: a client id connecting on the second gateway takes over its session on the first
(DISCONNECT 0x8E there), a message published on one reaches a subscriber on the other with
the sender's attribution, and a malformed claim on the bus changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import mqtt5
import pytest
from mqtt5 import DisconnectReasonCode

from tests.cloud.gateway.conftest import make_settings
from tests.cloud.gateway.harness import GatewayThread, client_context
from tests.cloud.gateway.pki import DEVICE_SERIAL, SERVICE_NAME, GatewayPKI
from tests.support.mqtt import RawClient
from tether.cloud.bus import InProcessHub
from tether.cloud.gateway import StaticAuthority
from tether.cloud.gateway.takeover import CHANNEL

# Not JSON, JSON of the wrong shape, and the right shape with a field of the wrong type.
MALFORMED = (b"not json", b"null", b"{}", b"[1]", b'["parked", "device", "SN", "w", "soon"]')


@pytest.fixture
def workers(pki: GatewayPKI, authority: StaticAuthority) -> Iterator[list[GatewayThread]]:
    hub = InProcessHub()
    started = [GatewayThread(make_settings(pki), authority, bus=hub.endpoint()) for _ in "ab"]
    try:
        yield started
    finally:
        for running in started:
            running.close()


def _until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_client_id_on_another_worker_takes_the_session_over(
    workers: list[GatewayThread], pki: GatewayPKI
) -> None:
    a, b = workers
    first = RawClient(a.port, client_context(pki, pki.device))
    second = RawClient(b.port, client_context(pki, pki.device))
    try:
        assert first.connect(DEVICE_SERIAL).reason_code == 0
        assert second.connect(DEVICE_SERIAL).reason_code == 0
        seen = first.wait_closed()
        assert [p.reason_code for p in seen] == [DisconnectReasonCode.SESSION_TAKEN_OVER]
        _until(lambda: a.gateway.sessions() == [])
        assert [i.name for i in b.gateway.sessions()] == [DEVICE_SERIAL]
    finally:
        first.close()
        second.close()


def test_a_message_crosses_to_the_other_worker_with_its_sender(
    workers: list[GatewayThread], pki: GatewayPKI
) -> None:
    a, b = workers
    service = RawClient(b.port, client_context(pki, pki.service))
    device = RawClient(a.port, client_context(pki, pki.device))
    try:
        assert service.connect(SERVICE_NAME).reason_code == 0
        service.send(mqtt5.SubscribePacket(1, [mqtt5.TopicFilter("devices/+/telemetry")]))
        assert isinstance(service.recv(), mqtt5.SubAckPacket)
        assert device.connect(DEVICE_SERIAL).reason_code == 0
        device.send(
            mqtt5.PublishPacket(
                f"devices/{DEVICE_SERIAL}/telemetry",
                b"42",
                qos=mqtt5.QoS.AT_LEAST_ONCE,
                packet_id=7,
                user_properties=[("tether-sender", "forged")],
            )
        )
        puback = device.recv()
        assert isinstance(puback, mqtt5.PubAckPacket) and puback.reason_code == 0
        message = service.recv()
        assert isinstance(message, mqtt5.PublishPacket)
        assert message.payload == b"42"
        assert message.user_properties == [("tether-sender", DEVICE_SERIAL)]
    finally:
        service.close()
        device.close()


@pytest.mark.parametrize("payload", MALFORMED)
def test_a_malformed_claim_changes_nothing(
    workers: list[GatewayThread], pki: GatewayPKI, payload: bytes
) -> None:
    a, b = workers
    client = RawClient(a.port, client_context(pki, pki.device))
    try:
        assert client.connect(DEVICE_SERIAL).reason_code == 0
        bus = b.gateway.bus
        assert bus is not None
        b.sync(lambda: bus.announce(CHANNEL, payload))
        time.sleep(0.2)
        assert [i.name for i in a.gateway.sessions()] == [DEVICE_SERIAL]
        client.send(mqtt5.PingReqPacket())
        assert isinstance(client.recv(), mqtt5.PingRespPacket)  # a's loop is still serving
    finally:
        client.close()
