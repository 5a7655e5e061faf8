"""The bounded framer over the mqtt5 codec: properties with Hypothesis."""

from __future__ import annotations

import itertools

import mqtt5
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.cloud.gateway.errors import MalformedPacketError, PacketTooLargeError
from tether.cloud.gateway.framing import PacketFramer, decode

MAX = 512


def feed_all(framer: PacketFramer, chunks: list[bytes]) -> list[bytes]:
    frames = []
    for chunk in chunks:
        framer.feed(chunk)
        while (frame := framer.next_frame()) is not None:
            frames.append(frame)
        assert framer.buffered < MAX  # never more than one partial packet
    return frames


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


packets = st.lists(
    st.one_of(
        st.builds(
            lambda t, p: mqtt5.PublishPacket(t, p),
            st.text("abc/", min_size=1, max_size=20),
            st.binary(max_size=200),
        ),
        st.just(mqtt5.PingReqPacket()),
        st.builds(lambda i: mqtt5.PubAckPacket(i), st.integers(1, 65535)),
    ),
    max_size=10,
)


@given(packets, st.lists(st.integers(0, 10_000), max_size=20))
def test_any_chunking_yields_the_same_packets(items, cuts):
    data = b"".join(p.write() for p in items)
    frames = feed_all(PacketFramer(MAX), chunked(data, cuts))
    assert frames == [p.write() for p in items]
    assert [type(decode(f)) for f in frames] == [type(p) for p in items]


@settings(max_examples=300)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 10_000), max_size=10))
def test_random_bytes_only_ever_raise_tether_errors_and_stay_bounded(data, cuts):
    framer = PacketFramer(MAX)
    try:
        for chunk in chunked(data, cuts):
            framer.feed(chunk)
            while framer.next_packet() is not None:
                pass
            assert framer.buffered < MAX
    except (MalformedPacketError, PacketTooLargeError) as exc:
        assert exc.code in {"mqtt_malformed_packet", "mqtt_packet_too_large"}


def test_too_large_is_refused_from_the_header_alone():
    framer = PacketFramer(MAX)
    framer.feed(bytes([0x30, 0x80, 0x08]))  # announces 1024 bytes
    with pytest.raises(PacketTooLargeError):
        framer.next_frame()


def test_a_five_byte_length_is_malformed():
    framer = PacketFramer(MAX)
    framer.feed(bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]))
    with pytest.raises(MalformedPacketError):
        framer.next_frame()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_invalid_utf8_in_a_topic_is_malformed_not_a_crash():
    # mqtt5 0.8 panics (a BaseException) on this input; decode turns it into our error.
    with pytest.raises(MalformedPacketError):
        decode(bytes([0x30, 5, 0, 3, 0xFF, 0xFE, 0xFD]))


def test_trailing_bytes_inside_a_frame_are_malformed():
    frame = mqtt5.PingReqPacket().write()
    with pytest.raises(MalformedPacketError):
        decode(bytes([frame[0], 1, 0]))
