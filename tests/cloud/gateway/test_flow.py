"""The outgoing flow control, sans I/O: packet identifiers, the window, the bounded queue."""

from __future__ import annotations

import mqtt5
from hypothesis import given
from hypothesis import strategies as st

from tether.cloud.gateway.flow import Admission, OutboundFlow, as_duplicate, with_packet_id
from tether.cloud.gateway.framing import PacketFramer

TOPICS = st.text(
    alphabet=st.characters(blacklist_characters="+#\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=40,
)


def decode(data: bytes) -> mqtt5.PublishPacket:
    framer = PacketFramer(1024 * 1024)
    framer.feed(data)
    packet = framer.next_packet()
    assert isinstance(packet, mqtt5.PublishPacket)
    return packet


@given(TOPICS, st.binary(max_size=300), st.integers(1, 65535))
def test_with_packet_id_changes_only_the_identifier(topic: str, payload: bytes, new: int) -> None:
    data = mqtt5.PublishPacket(
        topic, payload, qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=1, user_properties=[("k", "v")]
    ).write()
    packet = decode(with_packet_id(data, new))
    assert (packet.topic, packet.payload, packet.packet_id) == (topic, payload, new)
    assert packet.user_properties == [("k", "v")]


def publish(qos: int = 1, size: int = 10) -> bytes:
    return mqtt5.PublishPacket(
        "t", b"x" * size, qos=mqtt5.QoS(qos), packet_id=1 if qos else None
    ).write()


def flow(**overrides: int) -> OutboundFlow:
    values = {
        "receive_maximum": 2,
        "write_buffer_limit": 1000,
        "max_queued_messages": 2,
        "max_queued_bytes": 10_000,
    }
    values.update(overrides)
    return OutboundFlow(**values)


def test_the_window_holds_messages_until_acknowledged_in_order() -> None:
    outbound = flow()
    written = [outbound.offer(publish(), 1, 0) for _ in range(4)]
    assert [a for a, _ in written] == [Admission.WRITE] * 2 + [Admission.QUEUED] * 2
    ids = [decode(data).packet_id for _, data in written[:2]]
    assert outbound.offer(publish(), 1, 0)[0] is Admission.OVERFLOW  # queue of 2 is full
    assert outbound.acknowledge(ids[0])
    assert not outbound.acknowledge(ids[0])  # twice: not in flight any more
    released = outbound.release(0)
    assert len(released) == 1 and decode(released[0]).packet_id not in ids[1:]
    assert outbound.queued == 1 and outbound.inflight == 2


def test_a_full_buffer_drops_qos0_and_queues_qos1() -> None:
    outbound = flow(receive_maximum=100)
    assert outbound.offer(publish(0), 0, 999)[0] is Admission.WRITE
    assert outbound.offer(publish(0), 0, 1000)[0] is Admission.DROPPED
    assert outbound.offer(publish(1), 1, 1000)[0] is Admission.QUEUED
    assert outbound.release(1000) == []  # still full
    assert len(outbound.release(0)) == 1


def test_the_queue_is_bounded_in_bytes() -> None:
    outbound = flow(receive_maximum=1, max_queued_messages=100, max_queued_bytes=100)
    assert outbound.offer(publish(size=10), 1, 0)[0] is Admission.WRITE
    assert outbound.offer(publish(size=60), 1, 0)[0] is Admission.QUEUED
    assert outbound.offer(publish(size=60), 1, 0)[0] is Admission.OVERFLOW
    assert outbound.queued_bytes < 100


def test_packet_identifiers_skip_those_in_flight() -> None:
    outbound = flow(receive_maximum=65535, max_queued_messages=1)
    first = decode(outbound.offer(publish(), 1, 0)[1]).packet_id
    for _ in range(65533):
        outbound.offer(publish(), 1, 0)
    outbound.acknowledge(first + 5)
    last = decode(outbound.offer(publish(), 1, 0)[1]).packet_id
    assert last == 65535
    assert decode(outbound.offer(publish(), 1, 0)[1]).packet_id == first + 5


def test_what_is_owed_after_a_connection_and_taken_back_on_resume() -> None:
    outbound = flow(receive_maximum=2)
    first = decode(outbound.offer(publish(), 1, 0, "first")[1]).packet_id
    second = decode(outbound.offer(publish(2), 2, 0, "second")[1]).packet_id
    assert outbound.offer(publish(), 1, 0, "third")[0] is Admission.QUEUED
    outbound.pubrel_sent(second)
    assert outbound.unacknowledged() == [(first, "first", False), (second, "second", True)]
    assert outbound.waiting() == ["third"]

    resumed = flow(receive_maximum=2)
    resumed.resume(first, "first", pubrel_sent=False)
    resumed.resume(second, None, pubrel_sent=True)
    assert resumed.offer(publish(), 1, 0)[0] is Admission.QUEUED  # both count in the window
    assert resumed.acknowledge(second)  # PUBCOMP
    (data,) = resumed.release(0)
    assert decode(data).packet_id != first  # a fresh identifier, never one in flight
    assert resumed.unacknowledged()[0] == (first, "first", False)


def test_as_duplicate_sets_only_the_dup_flag() -> None:
    packet = decode(as_duplicate(with_packet_id(publish(), 7)))
    assert (packet.duplicate, packet.packet_id, packet.qos) == (True, 7, mqtt5.QoS.AT_LEAST_ONCE)
