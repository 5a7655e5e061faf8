"""Shared subscriptions and parked sessions across two workers joined by the in-process bus.

The same rules the two-host test checks over NATS (tests/cloud/test_cluster.py), without a
server: a shared group with a member on each worker gets every message exactly once in
total; a group with members on one worker only gets what the other publishes; a persistent
session parked on one worker and resumed on the other gets its queue once, in order, and the
first worker's stand-in is gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mqtt5
import pytest
from mqtt5 import QoS

from tests.cloud.gateway.conftest import make_settings
from tests.cloud.gateway.harness import GatewayThread
from tests.cloud.gateway.pki import DEVICE_SERIAL, SERVICE_NAME, GatewayPKI
from tests.cloud.gateway.test_mqtt5_strict import connect
from tests.cloud.gateway.test_persistent_sessions import (
    command,
    leave,
    persistent_device,
    receive,
    subscribe_commands,
)
from tests.cloud.gateway.test_shared_subscriptions import TELEMETRY, drain, subscribe
from tests.cloud.gateway.test_workers_bus import MALFORMED
from tests.support.mqtt import RawClient
from tests.support.pki import raw_leaf
from tether.cloud.bus import InProcessHub
from tether.cloud.gateway import StaticAuthority
from tether.cloud.gateway.handover import CHANNEL as HANDOVER_CHANNEL
from tether.cloud.gateway.state import attach_stores
from tether.cloud.registry import Registry
from tether.cloud.registry.mqtt_state import RegistryMqttState

GROUP = "$share/ingest/devices/+/telemetry"


@pytest.fixture
def workers(
    pki: GatewayPKI, authority: StaticAuthority, tmp_path: Path
) -> Iterator[list[GatewayThread]]:
    hub = InProcessHub()
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    started: list[GatewayThread] = []
    closers: list[Callable[[], None]] = []
    try:
        for _ in "ab":
            running = GatewayThread(make_settings(pki), authority, bus=hub.endpoint())
            started.append(running)
            registry = Registry.open(url)
            closers.append(registry.close)
            detach = running.call(
                attach_stores(running.gateway.broker, RegistryMqttState.on(registry))
            )
            closers.append(detach)
        yield started
    finally:
        for running in started:
            running.close()
        for close in reversed(closers):
            close()


def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _publish(device: RawClient, count: int, first: int = 0) -> None:
    for number in range(first, first + count):
        device.send(
            mqtt5.PublishPacket(TELEMETRY, b"%d" % number, qos=QoS.AT_LEAST_ONCE,
                                packet_id=number % 60000 + 1)
        )  # fmt: skip
        assert isinstance(device.recv(), mqtt5.PubAckPacket)


def test_a_group_across_workers_gets_each_message_once(
    workers: list[GatewayThread], pki: GatewayPKI, tmp_path: Path
) -> None:
    a, b = workers
    other = raw_leaf(pki.service_ca, "telemetry-ingest-2").write(tmp_path, "telemetry-ingest-2")
    first = connect(a, pki, pki.service, SERVICE_NAME)
    second = connect(b, pki, other, "telemetry-ingest-2")
    device = connect(a, pki)
    try:
        assert subscribe(first, GROUP) == [1]
        assert subscribe(second, GROUP) == [1]
        _publish(device, 10)
        got_first, got_second = drain(first), drain(second)
        assert sorted(got_first + got_second, key=int) == [b"%d" % n for n in range(10)]
        assert got_first and got_second
        second.close()  # a member leaving: the other gets everything
        _until(lambda: len(b.gateway.sessions()) == 0)
        _publish(device, 5, first=10)
        assert drain(first) == [b"%d" % n for n in range(10, 15)]
    finally:
        first.close()
        second.close()
        device.close()


def test_a_group_on_one_worker_gets_what_the_other_publishes(
    workers: list[GatewayThread], pki: GatewayPKI
) -> None:
    a, b = workers
    member = connect(b, pki, pki.service, SERVICE_NAME)
    device = connect(a, pki)
    try:
        assert subscribe(member, GROUP) == [1]
        _publish(device, 3)
        assert drain(member) == [b"0", b"1", b"2"]
    finally:
        member.close()
        device.close()


def test_a_session_parked_on_one_worker_resumes_on_the_other(
    workers: list[GatewayThread], pki: GatewayPKI
) -> None:
    a, b = workers
    device, _ = persistent_device(a, pki)
    subscribe_commands(device)
    leave(device)
    parked = a.gateway.broker.sessions
    assert parked is not None
    _until(lambda: parked.parked_at(("device", DEVICE_SERIAL)) is not None)
    command(b, pki, b"1", b"2", b"3")  # published on B, queued by A's stand-in
    device, ack = persistent_device(b, pki)
    try:
        assert ack.session_present is True
        assert [p.payload for p in receive(device, 3)] == [b"1", b"2", b"3"]
        assert parked.parked_at(("device", DEVICE_SERIAL)) is None  # A's stand-in is gone
        assert a.gateway.broker.subscription_count() == 0
        command(a, pki, b"live")
        assert [p.payload for p in receive(device, 1)] == [b"live"]
        with pytest.raises(TimeoutError):
            device.recv(timeout=0.5)  # nothing twice
    finally:
        device.close()


@pytest.mark.parametrize("payload", MALFORMED)
def test_a_malformed_handover_message_changes_nothing(
    workers: list[GatewayThread], pki: GatewayPKI, payload: bytes
) -> None:
    a, b = workers
    key = ("device", DEVICE_SERIAL)
    device, _ = persistent_device(a, pki)
    subscribe_commands(device)
    leave(device)
    parked = a.gateway.broker.sessions
    assert parked is not None
    _until(lambda: parked.parked_at(key) is not None)
    bus = b.gateway.bus
    assert bus is not None
    b.sync(lambda: bus.announce(HANDOVER_CHANNEL, payload))
    time.sleep(0.2)
    assert parked.parked_at(key) is not None  # A's stand-in still holds the session
    command(b, pki, b"kept")
    device, ack = persistent_device(a, pki)
    try:
        assert ack.session_present is True
        assert [p.payload for p in receive(device, 1)] == [b"kept"]
    finally:
        device.close()


def test_a_stopping_worker_lets_go_of_what_it_holds(
    workers: list[GatewayThread], pki: GatewayPKI
) -> None:
    a, b = workers
    key = ("device", DEVICE_SERIAL)
    device, _ = persistent_device(a, pki)
    subscribe_commands(device)
    leave(device)
    handover = b.gateway.broker.sessions.handover  # type: ignore[union-attr]
    assert handover is not None
    _until(lambda: handover.holder(key) == a.gateway.bus.worker_id)  # type: ignore[union-attr]
    a.call(a.gateway.stop(), timeout=15)  # its bus says "gone" as it closes
    _until(lambda: handover.holder(key) is None)  # so a connect to B need not wait for A
    device, ack = persistent_device(b, pki)
    try:
        assert ack.session_present is True
    finally:
        device.close()


def test_a_live_session_taken_over_from_another_worker_is_handed_not_parked(
    workers: list[GatewayThread], pki: GatewayPKI
) -> None:
    a, b = workers
    first, _ = persistent_device(a, pki)
    subscribe_commands(first)
    second = None
    try:
        second, ack = persistent_device(b, pki)  # takes the live session over from A
        assert ack.session_present is True  # A saved it before B read the store
        seen = first.wait_closed()
        assert [p.reason_code for p in seen] == [mqtt5.DisconnectReasonCode.SESSION_TAKEN_OVER]
        parked = a.gateway.broker.sessions
        assert parked is not None
        assert parked.parked_keys() == []  # saved, not parked: A queues nothing for it
        command(a, pki, b"after")
        assert [p.payload for p in receive(second, 1)] == [b"after"]
        with pytest.raises(TimeoutError):
            second.recv(timeout=0.5)
    finally:
        first.close()
        if second is not None:
            second.close()
