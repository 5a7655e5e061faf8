"""Every gateway limit acts as documented, over real TLS, with its reason code and counter.

Each test starts a gateway with one limit set small, pushes past it with real clients, and
checks what the client saw (SUBACK 0x97, DISCONNECT 0x97, a closed socket), the log line's
code and the counter in ``limits_report()``.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import mqtt5
import pytest
from mqtt5 import DisconnectReasonCode, QoS, SubAckReasonCode, TopicFilter

from tests.cloud.gateway.harness import GatewayThread, client_context, wait_for_log
from tests.cloud.gateway.pki import DEVICE_SERIAL, SERVICE_NAME, GatewayPKI
from tests.support.mqtt import RawClient
from tether.cloud.gateway import GatewaySettings
from tether.cloud.gateway.errors import GatewayConfigurationError

OWN = f"devices/{DEVICE_SERIAL}"
COMMANDS = f"{OWN}/commands"
IO_TIMEOUT = 5.0


def counter(running: GatewayThread, code: str) -> int:
    return int(running.sync(running.gateway.limits_report).counters[code])


def wait_counter(running: GatewayThread, code: str, at_least: int = 1) -> int:
    deadline = time.monotonic() + IO_TIMEOUT
    while (value := counter(running, code)) < at_least:
        if time.monotonic() > deadline:
            raise AssertionError(f"counter {code} is {value}, expected >= {at_least}")
        time.sleep(0.02)
    return value


def idle_tcp(port: int, source: str = "127.0.0.2") -> socket.socket:
    """A TCP connection from ``source`` (a loopback address) that never sends a byte."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(IO_TIMEOUT)
    sock.connect(("127.0.0.1", port))
    return sock


def closed_by_gateway(sock: socket.socket, timeout: float = IO_TIMEOUT) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def connect_device(port: int, pki: GatewayPKI, **connect: object) -> RawClient:
    client = RawClient(port, client_context(pki, pki.device))
    ack = client.connect(DEVICE_SERIAL, **connect)
    assert ack.reason_code == 0, ack
    return client


def suback(client: RawClient, packet_id: int, patterns: list[str]) -> list[int]:
    filters = [TopicFilter(p, max_qos=QoS.AT_LEAST_ONCE) for p in patterns]
    client.send(mqtt5.SubscribePacket(packet_id, filters))
    ack = client.recv()
    assert isinstance(ack, mqtt5.SubAckPacket) and ack.packet_id == packet_id, ack
    return [int(code) for code in ack.reason_codes]


def test_filters_beyond_the_per_subscribe_cap_get_quota_exceeded(gateway_factory, pki, caplog):
    running = gateway_factory(max_filters_per_subscribe=3)
    client = connect_device(running.port, pki)
    try:
        codes = suback(client, 1, [f"{OWN}/f{i}" for i in range(5)])
        assert codes == [1, 1, 1, SubAckReasonCode.QUOTA_EXCEEDED, SubAckReasonCode.QUOTA_EXCEEDED]
        client.send(mqtt5.PingReqPacket())  # the session stays
        assert isinstance(client.recv(), mqtt5.PingRespPacket)
    finally:
        client.close()
    assert wait_for_log(caplog, "subscribe_filters_exceeded").levelname == "WARNING"
    assert counter(running, "subscribe_filters_exceeded") == 1
    assert running.sync(running.gateway.broker.subscription_count) == 0  # closed: all gone


def test_a_session_holds_at_most_its_subscription_quota(gateway_factory, pki, caplog):
    running = gateway_factory(max_subscriptions_per_session=4)
    client = connect_device(running.port, pki)
    try:
        assert suback(client, 1, [f"{OWN}/a", f"{OWN}/b", f"{OWN}/c"]) == [1, 1, 1]
        assert suback(client, 2, [f"{OWN}/d", f"{OWN}/e", f"{OWN}/a"]) == [1, 0x97, 1]
        assert running.sync(running.gateway.broker.subscription_count) == 4
        # Unsubscribing frees room again.
        client.send(mqtt5.UnsubscribePacket(3, [f"{OWN}/a"]))
        assert isinstance(client.recv(), mqtt5.UnsubAckPacket)
        assert suback(client, 4, [f"{OWN}/e"]) == [1]
    finally:
        client.close()
    wait_for_log(caplog, "session_subscriptions_exceeded")
    assert counter(running, "session_subscriptions_exceeded") == 1


def test_connack_carries_the_servers_receive_maximum(gateway_factory, pki):
    running = gateway_factory(receive_maximum=7)
    client = RawClient(running.port, client_context(pki, pki.device))
    try:
        assert client.connect(DEVICE_SERIAL).receive_max == 7
    finally:
        client.close()


def test_a_client_that_never_acknowledges_is_disconnected_when_its_queue_is_full(
    gateway_factory, pki, caplog
):
    running = gateway_factory(max_queued_messages=3)
    client = connect_device(running.port, pki, receive_max=1)
    try:
        assert suback(client, 1, [f"{OWN}/echo"]) == [1]
        for packet_id in range(1, 7):  # 1 in flight + 3 waiting fit; the 5th overflows
            client.send(
                mqtt5.PublishPacket(f"{OWN}/echo", b"x", qos=QoS.AT_LEAST_ONCE, packet_id=packet_id)
            )
        seen = client.wait_closed()
    finally:
        client.close()
    publishes = [p for p in seen if isinstance(p, mqtt5.PublishPacket)]
    disconnects = [p for p in seen if isinstance(p, mqtt5.DisconnectPacket)]
    assert len(publishes) == 1  # never acknowledged, so the window never opened again
    assert [d.reason_code for d in disconnects] == [DisconnectReasonCode.QUOTA_EXCEEDED]
    assert wait_for_log(caplog, "slow_consumer_disconnected").levelname == "WARNING"
    assert counter(running, "slow_consumer_disconnected") == 1
    assert counter(running, "receive_maximum_wait") == 3


def slow_reader(port: int, pki: GatewayPKI, qos: QoS) -> RawClient:
    """The device, subscribed to its commands, with a tiny receive buffer it never reads."""
    client = RawClient(port, client_context(pki, pki.device), receive_buffer=4096)
    assert client.connect(DEVICE_SERIAL).reason_code == 0
    client.send(mqtt5.SubscribePacket(1, [TopicFilter(f"{COMMANDS}/#", max_qos=qos)]))
    assert isinstance(client.recv(), mqtt5.SubAckPacket)
    return client


def flood_commands(port: int, pki: GatewayPKI, qos: QoS, until: object, limit: int) -> int:
    """The service publishes 8 KiB commands until ``until()`` or ``limit`` messages."""
    service = RawClient(port, client_context(pki, pki.service))
    sent = 0
    try:
        assert service.connect(SERVICE_NAME).reason_code == 0
        payload = b"c" * 8192
        while sent < limit and not until():  # type: ignore[operator]
            packet_id = sent % 65535 + 1 if int(qos) else None
            service.send(
                mqtt5.PublishPacket(f"{COMMANDS}/x", payload, qos=qos, packet_id=packet_id)
            )
            if int(qos):
                assert isinstance(service.recv(), mqtt5.PubAckPacket)
            sent += 1
    finally:
        service.close()
    return sent


def test_qos0_messages_for_a_slow_consumer_are_dropped_and_the_session_stays(
    gateway_factory, pki, caplog
):
    running = gateway_factory()
    reader = slow_reader(running.port, pki, QoS.AT_MOST_ONCE)
    try:
        flood_commands(
            running.port,
            pki,
            QoS.AT_MOST_ONCE,
            lambda: counter(running, "slow_consumer_qos0_dropped") > 0,
            limit=5000,
        )
        assert counter(running, "slow_consumer_qos0_dropped") > 0
        assert [i.name for i in running.sync(running.gateway.sessions)] == [DEVICE_SERIAL]
        report = running.sync(running.gateway.limits_report)
        assert report.counters["slow_consumer_disconnected"] == 0
    finally:
        reader.close()
    wait_for_log(caplog, "slow_consumer_qos0_dropped")


def test_qos1_messages_for_a_slow_consumer_end_its_session_with_quota_exceeded(
    gateway_factory, pki, caplog
):
    running = gateway_factory(max_queued_messages=4, max_queued_bytes=32 * 1024)
    reader = slow_reader(running.port, pki, QoS.AT_LEAST_ONCE)
    try:
        flood_commands(
            running.port,
            pki,
            QoS.AT_LEAST_ONCE,
            lambda: counter(running, "slow_consumer_disconnected") > 0,
            limit=5000,
        )
        assert counter(running, "slow_consumer_disconnected") == 1
        deadline = time.monotonic() + IO_TIMEOUT
        while running.sync(running.gateway.sessions) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert running.sync(running.gateway.sessions) == []
    finally:
        reader.close()
    wait_for_log(caplog, "slow_consumer_disconnected")


def test_connections_per_address_that_have_not_connected_are_capped(gateway_factory, pki, caplog):
    running = gateway_factory(max_pending_per_address=3)
    idle = [idle_tcp(running.port) for _ in range(3)]
    try:
        extra = idle_tcp(running.port)
        assert closed_by_gateway(extra)
        extra.close()
        assert not any(closed_by_gateway(sock, timeout=0.2) for sock in idle)
        # Another address is not affected.
        connect_device(running.port, pki).close()
    finally:
        for sock in idle:
            sock.close()
    record = wait_for_log(caplog, "handshake_per_address_cap_reached")
    assert record.levelname == "WARNING"
    assert counter(running, "handshake_per_address_cap_reached") == 1


def test_a_full_pending_table_evicts_the_oldest_handshake(gateway_factory, pki, caplog):
    running = gateway_factory(max_pending_connections=3)
    idle = [idle_tcp(running.port, source=f"127.0.0.{2 + i}") for i in range(3)]
    try:
        wait_pending(running, 3)
        client = connect_device(running.port, pki)  # evicts the oldest idle one
        client.close()
        assert closed_by_gateway(idle[0])
        assert not closed_by_gateway(idle[2], timeout=0.2)
    finally:
        for sock in idle:
            sock.close()
    wait_for_log(caplog, "handshake_cap_reached")
    assert counter(running, "handshake_cap_reached") >= 1


def wait_pending(running: GatewayThread, count: int) -> None:
    deadline = time.monotonic() + IO_TIMEOUT
    while running.sync(running.gateway.limits_report).pending_connections < count:
        if time.monotonic() > deadline:
            raise AssertionError("the gateway did not see the connections")
        time.sleep(0.02)


def test_the_overall_connection_cap_closes_new_connections(gateway_factory, pki, caplog):
    running = gateway_factory(max_connections=2)
    first = connect_device(running.port, pki)
    second = idle_tcp(running.port)
    try:
        wait_pending(running, 1)
        third = idle_tcp(running.port, source="127.0.0.3")
        assert closed_by_gateway(third)
        third.close()
        report = running.sync(running.gateway.limits_report)
        assert report.open_connections == 2 and report.max_connections == 2
    finally:
        first.close()
        second.close()
    wait_for_log(caplog, "connection_cap_reached")
    assert counter(running, "connection_cap_reached") == 1


def test_no_tls_handshake_within_the_handshake_timeout_closes(gateway_factory, caplog):
    running = gateway_factory(handshake_timeout=0.3, connect_timeout=5.0)
    with contextlib.closing(idle_tcp(running.port)) as sock:
        started = time.monotonic()
        assert closed_by_gateway(sock)
        assert time.monotonic() - started < 3  # well before the connect timeout
    assert wait_for_log(caplog, "handshake_deadline").levelname == "WARNING"
    wait_counter(running, "handshake_deadline")


def test_limits_report_has_every_setting_and_counter(gateway, pki):
    report = gateway.sync(gateway.gateway.limits_report)
    assert report.settings["max_filters_per_subscribe"] == 32
    assert report.settings["handshake_timeout"] == 3.0
    assert set(report.counters) >= {"connection_cap_reached", "slow_consumer_qos0_dropped"}
    assert all(value == 0 for value in report.counters.values())
    assert report.fd_limit >= 1024
    data = report.to_dict()
    assert data["open_connections"] == 0 and data["sessions"] == 0
    with pytest.raises(TypeError):
        report.counters["connection_cap_reached"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    "overrides",
    [
        {"handshake_timeout": 0},
        {"max_connections": 0},
        {"max_filters_per_subscribe": 0},
        {"receive_maximum": 0},
        {"receive_maximum": 70_000},
        {"max_queued_bytes": 1024},
    ],
)
def test_bad_limit_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(GatewayConfigurationError) as error:
        GatewaySettings(certificate_chain=Path("a"), private_key=Path("b"), **overrides)  # type: ignore[arg-type]
    assert error.value.code == "gateway_invalid_settings"


def test_limits_come_from_cloud_json_with_defaults_for_missing_keys(tmp_path: Path) -> None:
    import json

    from tether.cloud.settings import CloudSettings

    (tmp_path / "cloud.json").write_text(
        json.dumps(
            {
                "version": 1,
                "database_url": "sqlite:///x.db",
                "gateway": {"max_filters_per_subscribe": 8, "handshake_timeout": 1.5},
            }
        )
    )
    (tmp_path / "cloud.json").chmod(0o600)  # the settings file may hold a password
    settings = CloudSettings.load(tmp_path).gateway_settings()
    assert settings.max_filters_per_subscribe == 8
    assert settings.handshake_timeout == 1.5
    defaults = GatewaySettings(certificate_chain=Path("a"), private_key=Path("b"))
    assert settings.max_pending_per_address == defaults.max_pending_per_address
    assert json.loads(CloudSettings.load(tmp_path).to_json())["gateway"]["max_connections"] == (
        defaults.max_connections
    )


def test_the_fd_soft_limit_is_raised_to_the_hard_limit_with_a_log_line() -> None:
    import subprocess
    import sys

    script = """
import logging, resource
from tether.cloud.gateway.limits import raise_fd_limit
logging.basicConfig(level=logging.INFO, format="%(message)s")
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
raised = raise_fd_limit()
assert raised == hard == resource.getrlimit(resource.RLIMIT_NOFILE)[0], (raised, hard)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "[fd_limit_raised] file descriptor limit raised from 256 to" in done.stderr
