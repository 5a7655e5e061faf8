"""Persistent sessions in a real registry database: across a disconnect and a restart.

Queued QoS 1 delivery in order and its bound, Clean Start 1 deleting the session, an
administrative drop deleting it, MQTT 3.1.1 Clean Session 0, the Will Delay Interval, and
unacknowledged outgoing QoS 1/2 resent (DUP=1, owed PUBREL) after a reconnect.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import mqtt5
import pytest
from mqtt5 import ConnAckReasonCode, QoS, TopicFilter

from tests.cloud.gateway.harness import GatewayThread, client_context, wait_for_log
from tests.cloud.gateway.pki import DEVICE_SERIAL, SERVICE_NAME
from tests.cloud.gateway.test_mqtt5_strict import connect
from tests.support.mqtt import RawClient
from tether.cloud.gateway.mqtt311 import decode, encode
from tether.cloud.gateway.mqtt311.packets import ConnAck, Connect, Disconnect, Publish, Subscribe
from tether.cloud.gateway.persistence import PersistentSessions, discard_ended
from tether.cloud.gateway.stores import StoreLimits
from tether.cloud.registry import Registry
from tether.cloud.registry.mqtt_state import RegistryMqttState

OWN = f"devices/{DEVICE_SERIAL}"
COMMANDS = f"{OWN}/commands/#"


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Registry]:
    registry = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}")
    yield registry
    registry.close()


def keep_sessions(running: GatewayThread, registry: Registry, **limits: int) -> PersistentSessions:
    sessions = PersistentSessions(RegistryMqttState.on(registry, StoreLimits(**limits)))
    running.gateway.broker.sessions = sessions
    return sessions


@pytest.fixture
def kept(gateway, database) -> Iterator[GatewayThread]:
    sessions = keep_sessions(gateway, database)
    yield gateway
    gateway.close()
    sessions.close()


def persistent_device(
    running: GatewayThread, pki, *, clean: bool = False, expiry: int = 600, **kwargs
):
    client = RawClient(running.port, client_context(pki, pki.device))
    client.send(
        mqtt5.ConnectPacket(
            DEVICE_SERIAL, clean_start=clean, session_expiry_interval=expiry, keep_alive=30,
            **kwargs,
        )
    )  # fmt: skip
    ack = client.recv()
    assert ack.reason_code == ConnAckReasonCode.SUCCESS
    return client, ack


def leave(client: RawClient) -> None:
    client.send(mqtt5.DisconnectPacket())
    client.wait_closed()
    client.close()


def command(running: GatewayThread, pki, *payloads: bytes, qos=QoS.AT_LEAST_ONCE) -> None:
    service = connect(running, pki, pki.service, SERVICE_NAME)
    try:
        for number, payload in enumerate(payloads, 1):
            service.send(
                mqtt5.PublishPacket(
                    f"{OWN}/commands/c", payload, qos=qos, packet_id=number if int(qos) else None
                )
            )
            if int(qos):
                assert isinstance(service.recv(), mqtt5.PubAckPacket)
    finally:
        service.close()


def receive(client: RawClient, count: int) -> list[mqtt5.PublishPacket]:
    got = []
    for _ in range(count):
        packet = client.recv()
        assert isinstance(packet, mqtt5.PublishPacket), packet
        got.append(packet)
        if int(packet.qos):
            client.send(mqtt5.PubAckPacket(packet.packet_id))
    return got


def subscribe_commands(client: RawClient) -> None:
    client.send(mqtt5.SubscribePacket(1, [TopicFilter(COMMANDS, max_qos=QoS.AT_LEAST_ONCE)]))
    assert isinstance(client.recv(), mqtt5.SubAckPacket)


def test_queued_qos1_is_delivered_in_order_on_reconnect(kept, pki):
    device, ack = persistent_device(kept, pki)
    assert ack.session_present is False
    subscribe_commands(device)
    leave(device)
    command(kept, pki, b"1", b"2", b"3")
    command(kept, pki, b"qos0 is not kept", qos=QoS.AT_MOST_ONCE)
    device, ack = persistent_device(kept, pki)
    try:
        assert ack.session_present is True
        got = receive(device, 3)
        assert [p.payload for p in got] == [b"1", b"2", b"3"]
        assert got[0].user_properties == [("tether-sender", SERVICE_NAME)]
        command(kept, pki, b"live")  # the stored filter was subscribed again
        assert [p.payload for p in receive(device, 1)] == [b"live"]
    finally:
        device.close()


def test_clean_start_deletes_the_session(kept, pki):
    device, _ = persistent_device(kept, pki)
    subscribe_commands(device)
    leave(device)
    command(kept, pki, b"lost")
    device, ack = persistent_device(kept, pki, clean=True, expiry=0)
    try:
        assert ack.session_present is False
        with pytest.raises(TimeoutError):
            device.recv(timeout=0.5)  # the queue went with the session
    finally:
        leave(device)
    device, ack = persistent_device(kept, pki)
    assert ack.session_present is False  # expiry 0: nothing was kept this time either
    device.close()


def test_the_queue_is_bounded_and_keeps_the_oldest(gateway, pki, database, caplog):
    sessions = keep_sessions(gateway, database, max_queued_per_session=2)
    try:
        device, _ = persistent_device(gateway, pki)
        subscribe_commands(device)
        leave(device)
        command(gateway, pki, b"1", b"2", b"3")
        wait_for_log(caplog, "session_queue_full")
        device, ack = persistent_device(gateway, pki)
        assert ack.session_present is True
        assert [p.payload for p in receive(device, 2)] == [b"1", b"2"]
        with pytest.raises(TimeoutError):
            device.recv(timeout=0.5)
        device.close()
    finally:
        gateway.close()
        sessions.close()


def test_a_session_survives_a_gateway_restart(gateway_factory, pki, database):
    first = gateway_factory()
    sessions = keep_sessions(first, database)
    device, _ = persistent_device(first, pki)
    subscribe_commands(device)
    leave(device)
    command(first, pki, b"before")
    first.close()
    sessions.close()
    second = gateway_factory()
    sessions = keep_sessions(second, database)
    try:
        assert second.call(sessions.restore(second.gateway.broker)) == 1
        command(second, pki, b"after")  # queued by the restored stand-in
        device, ack = persistent_device(second, pki)
        assert ack.session_present is True
        assert [p.payload for p in receive(device, 2)] == [b"before", b"after"]
        device.close()
    finally:
        second.close()
        sessions.close()


def test_an_administrative_drop_deletes_the_session(kept, pki):
    device, _ = persistent_device(kept, pki)
    subscribe_commands(device)
    dropped = kept.call(
        kept.gateway.drop_sessions(lambda i: i.name == DEVICE_SERIAL, reason="disabled")
    )
    assert dropped == 1
    device.wait_closed()
    device.close()
    device, ack = persistent_device(kept, pki)
    assert ack.session_present is False  # not resumed
    device.close()


def test_mqtt311_clean_session_0_keeps_the_session(kept, pki):
    def connect311() -> tuple[RawClient, ConnAck]:
        client = RawClient(kept.port, client_context(pki, pki.device), decode=decode)
        client.send(encode(Connect(DEVICE_SERIAL, clean_session=False)))
        return client, client.recv()

    device, ack = connect311()
    assert ack.session_present is False
    device.send(encode(Subscribe(1, ((COMMANDS, 1),))))
    device.recv()
    device.send(encode(Disconnect()))
    device.wait_closed()
    device.close()
    command(kept, pki, b"for 3.1.1")
    device, ack = connect311()
    try:
        assert ack.session_present is True
        got = device.recv()
        assert isinstance(got, Publish) and got.payload == b"for 3.1.1" and got.qos == 1
    finally:
        device.close()


def test_the_will_waits_for_its_delay_and_a_reconnect_cancels_it(kept, pki):
    service = connect(kept, pki, pki.service, SERVICE_NAME)
    try:
        service.send(mqtt5.SubscribePacket(1, [TopicFilter("devices/+/status")]))
        assert isinstance(service.recv(), mqtt5.SubAckPacket)
        will = mqtt5.Will(topic=f"{OWN}/status", payload=b"gone", will_delay_interval=3)
        device, _ = persistent_device(kept, pki, will=will)
        device.close()  # abnormal: the Will is due in 3 s
        closed = time.monotonic()
        device, _ = persistent_device(kept, pki, will=will)  # back in time: cancelled
        with pytest.raises(TimeoutError):
            service.recv(timeout=max(closed + 3.5 - time.monotonic(), 0.5))
        device.close()  # abnormal again, and nobody comes back
        started = time.monotonic()
        got = service.recv(timeout=10)
        assert got.payload == b"gone"
        assert time.monotonic() - started > 2  # it waited for its delay
    finally:
        service.close()


def test_qos2_is_exactly_once_across_a_reconnect_mid_flow(kept, pki):
    service = connect(kept, pki, pki.service, SERVICE_NAME)
    try:
        service.send(
            mqtt5.SubscribePacket(1, [TopicFilter("devices/+/telemetry", max_qos=QoS.AT_MOST_ONCE)])
        )
        assert isinstance(service.recv(), mqtt5.SubAckPacket)
        telemetry = f"{OWN}/telemetry"
        device, _ = persistent_device(kept, pki)
        device.send(mqtt5.PublishPacket(telemetry, b"once", qos=QoS.EXACTLY_ONCE, packet_id=9))
        assert isinstance(device.recv(), mqtt5.PubRecPacket)
        device.close()  # the connection breaks before PUBREL
        device, ack = persistent_device(kept, pki)
        assert ack.session_present is True
        device.send(
            mqtt5.PublishPacket(
                telemetry, b"once", qos=QoS.EXACTLY_ONCE, packet_id=9, duplicate=True
            )
        )
        assert isinstance(device.recv(), mqtt5.PubRecPacket)
        device.send(mqtt5.PubRelPacket(9))
        comp = device.recv()
        assert comp.reason_code == mqtt5.PubCompReasonCode.SUCCESS  # known after the reconnect
        assert service.recv().payload == b"once"
        with pytest.raises(TimeoutError):
            service.recv(timeout=0.5)  # and not a second time
        device.close()
    finally:
        service.close()


def test_attach_stores_gives_a_gateway_both_and_restores(gateway, pki, database):
    from tether.cloud.gateway.state import attach_stores

    store = RegistryMqttState.on(database)
    store.save_session("device", DEVICE_SERIAL, 600, [])
    detach = gateway.call(attach_stores(gateway.gateway.broker, store))
    try:
        device, ack = persistent_device(gateway, pki)
        assert ack.session_present is True
        assert ack.retain_available is True
        device.close()
    finally:
        gateway.close()
        detach()


def test_unacknowledged_outgoing_is_resent_after_a_reconnect(kept, pki):
    """MQTT 5 4.4: PUBLISH again with DUP=1 under the same identifier, PUBREL where owed."""
    device, _ = persistent_device(kept, pki)
    device.send(mqtt5.SubscribePacket(1, [TopicFilter(COMMANDS, max_qos=QoS.EXACTLY_ONCE)]))
    assert isinstance(device.recv(), mqtt5.SubAckPacket)
    command(kept, pki, b"one")
    service = connect(kept, pki, pki.service, SERVICE_NAME)
    try:
        for number, payload in enumerate((b"two", b"three"), 10):
            service.send(
                mqtt5.PublishPacket(
                    f"{OWN}/commands/c", payload, qos=QoS.EXACTLY_ONCE, packet_id=number
                )
            )
            assert isinstance(service.recv(), mqtt5.PubRecPacket)
            service.send(mqtt5.PubRelPacket(number))
            assert isinstance(service.recv(), mqtt5.PubCompPacket)
    finally:
        service.close()
    one, two, three = (device.recv() for _ in range(3))
    assert [p.payload for p in (one, two, three)] == [b"one", b"two", b"three"]
    assert not one.duplicate
    device.send(mqtt5.PubRecPacket(two.packet_id))  # PUBREL comes; PUBCOMP never goes
    pubrel = device.recv()
    assert isinstance(pubrel, mqtt5.PubRelPacket) and pubrel.packet_id == two.packet_id
    device.close()  # the connection breaks with one, two and three unacknowledged

    device, ack = persistent_device(kept, pki)
    try:
        assert ack.session_present is True
        again_one, again_two, again_three = (device.recv() for _ in range(3))
        assert isinstance(again_one, mqtt5.PublishPacket) and again_one.duplicate
        assert (again_one.packet_id, again_one.payload) == (one.packet_id, b"one")
        assert again_one.user_properties == [("tether-sender", SERVICE_NAME)]
        assert isinstance(again_two, mqtt5.PubRelPacket)
        assert again_two.packet_id == two.packet_id
        assert isinstance(again_three, mqtt5.PublishPacket) and again_three.duplicate
        assert (again_three.packet_id, again_three.qos) == (three.packet_id, QoS.EXACTLY_ONCE)
        device.send(mqtt5.PubAckPacket(one.packet_id))
        device.send(mqtt5.PubCompPacket(two.packet_id))
        device.send(mqtt5.PubRecPacket(three.packet_id))
        assert device.recv().packet_id == three.packet_id  # PUBREL
        device.send(mqtt5.PubCompPacket(three.packet_id))
        command(kept, pki, b"live")  # the window is free again, and nothing else is resent
        live = device.recv()
        assert (live.payload, live.duplicate) == (b"live", False)
        device.send(mqtt5.PubAckPacket(live.packet_id))
    finally:
        device.close()


def test_a_revoked_identity_loses_its_stored_session_while_away(kept, pki, database):
    """What the registry feed calls after dropping the live sessions (discard_ended)."""
    device, _ = persistent_device(kept, pki)
    subscribe_commands(device)
    fingerprint = kept.call(_identity_of(kept))
    leave(device)
    store = kept.gateway.broker.sessions.store
    assert store.load_session("device", DEVICE_SERIAL) is not None
    unrelated = kept.call(
        discard_ended(kept.gateway.broker, lambda i: i.name == "someone-else", reason="x")
    )
    assert unrelated == 0
    revoked = kept.call(
        discard_ended(
            kept.gateway.broker,
            lambda i: i.certificate_fingerprint == fingerprint,
            reason="certificate.revoke",
        )
    )
    assert revoked == 1
    assert store.load_session("device", DEVICE_SERIAL) is None
    command(kept, pki, b"not queued")  # the stand-in left the broker
    device, ack = persistent_device(kept, pki)
    assert ack.session_present is False
    device.close()


def test_a_disabled_identity_loses_a_session_no_stand_in_holds(gateway, pki, database):
    """A session stored by another worker (or before a restart) is matched by name."""
    sessions = keep_sessions(gateway, database)
    try:
        sessions.store.save_session("device", DEVICE_SERIAL, 600, [])
        assert gateway.call(
            discard_ended(gateway.gateway.broker, lambda i: i.name == DEVICE_SERIAL, reason="off")
        ) == 1  # fmt: skip
        assert sessions.store.load_session("device", DEVICE_SERIAL) is None
        assert gateway.call(
            discard_ended(gateway.gateway.broker, lambda i: i.name == DEVICE_SERIAL, reason="off")
        ) == 0  # fmt: skip
    finally:
        gateway.close()
        sessions.close()


def test_a_revoked_certificate_or_ca_loses_a_session_no_stand_in_holds(gateway, pki, database):
    """Stored by another worker (or before a restart): matched on the certificate and CA it
    was made under, so a revocation deletes it and the device's next certificate starts clean."""
    sessions = keep_sessions(gateway, database)
    broker = gateway.gateway.broker
    try:
        store = sessions.store
        for name, cert, ca in ((DEVICE_SERIAL, "aa", "ca"), ("OTHER-1", "bb", "cb")):
            store.save_session(
                "device",
                name,
                600,
                [],
                certificate_fingerprint=cert * 32,
                issuer_fingerprint=ca * 32,
            )
        assert store.load_session("device", DEVICE_SERIAL).certificate_fingerprint == "aa" * 32
        assert gateway.call(
            discard_ended(broker, lambda i: i.certificate_fingerprint == "ff" * 32, reason="r")
        ) == 0  # fmt: skip
        assert gateway.call(
            discard_ended(broker, lambda i: i.certificate_fingerprint == "aa" * 32, reason="r")
        ) == 1  # fmt: skip
        assert store.load_session("device", DEVICE_SERIAL) is None
        assert store.load_session("device", "OTHER-1") is not None
        assert gateway.call(
            discard_ended(broker, lambda i: i.issuer_fingerprint == "cb" * 32, reason="ca")
        ) == 1  # fmt: skip
        assert store.load_session("device", "OTHER-1") is None
    finally:
        gateway.close()
        sessions.close()


async def _identity_of(running: GatewayThread) -> str:
    (identity,) = running.gateway.sessions()
    return identity.certificate_fingerprint


def test_queued_messages_expire_and_are_delivered_with_what_remains(kept, pki):
    """MQTT 5 3.3.2.3.3, on the store's clock (moved on 60 s instead of waiting)."""
    store = kept.gateway.broker.sessions.store
    device, _ = persistent_device(kept, pki)
    subscribe_commands(device)
    leave(device)
    service = connect(kept, pki, pki.service, SERVICE_NAME)
    try:
        for number, (payload, interval) in enumerate(((b"short", 5), (b"long", 600)), 1):
            service.send(
                mqtt5.PublishPacket(f"{OWN}/commands/c", payload, qos=QoS.AT_LEAST_ONCE,
                                    packet_id=number, message_expiry_interval=interval)
            )  # fmt: skip
            assert isinstance(service.recv(), mqtt5.PubAckPacket)
    finally:
        service.close()
    wait_for_queued(store, 2)
    start = store._clock()
    store._clock = lambda: start + timedelta(seconds=60)
    device, ack = persistent_device(kept, pki)
    try:
        assert ack.session_present is True
        (got,) = receive(device, 1)
        assert got.payload == b"long"
        assert 539 <= got.message_expiry_interval <= 540
        with pytest.raises(TimeoutError):
            device.recv(timeout=0.5)  # the expired one is not delivered
    finally:
        device.close()


def wait_for_queued(store: RegistryMqttState, count: int) -> None:
    """The stand-in queues on the sessions thread: wait (bounded) until ``count`` are stored."""
    from sqlalchemy import func, select

    from tether.cloud.registry.models import MqttQueuedModel

    for _ in range(250):
        with store._read() as session:
            if session.scalar(select(func.count()).select_from(MqttQueuedModel)) >= count:
                return
        time.sleep(0.02)
    raise AssertionError(f"{count} messages were never queued")


def test_a_delayed_will_with_retain_is_retained_when_it_is_published(kept, pki, database):
    from tests.cloud.gateway.test_retained import retained_for, subscribe, with_retained

    retained = with_retained(kept, database)
    try:
        will = mqtt5.Will(
            topic=f"{OWN}/status", payload=b"gone", retain=True, will_delay_interval=1
        )
        device, _ = persistent_device(kept, pki, will=will)
        device.close()  # abnormal: the Will is due in 1 s
        service = connect(kept, pki, pki.service, SERVICE_NAME)
        try:
            assert subscribe(service, "devices/+/status") == [1]
            assert service.recv(timeout=10).payload == b"gone"  # live, after the delay
        finally:
            service.close()
        for _ in range(250):  # the retained write runs on its thread (bounded wait)
            if retained._store.retained_matching(f"{OWN}/status", 1):
                break
            time.sleep(0.02)
        late = connect(kept, pki, pki.service, SERVICE_NAME)  # a new subscription
        try:
            assert subscribe(late, "devices/+/status") == [1]
            (got,) = retained_for(late, 1)
            assert (got.payload, got.retain) == (b"gone", True)
        finally:
            late.close()
    finally:
        retained.close()
