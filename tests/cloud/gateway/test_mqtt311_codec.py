"""The MQTT 3.1.1 codec: every packet round-trips, and bad bytes raise only its own error."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.cloud.gateway.framing import PacketFramer, connect_protocol
from tether.cloud.gateway.mqtt311 import Mqtt311MalformedError, decode, encode
from tether.cloud.gateway.mqtt311.packets import (
    ConnAck,
    ConnAckCode,
    Connect,
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    Will,
)

text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)
ids = st.integers(1, 65_535)
blobs = st.binary(max_size=200)
wills = st.builds(Will, text, blobs, qos=st.integers(0, 2), retain=st.booleans())


@st.composite
def publishes(draw: st.DrawFn) -> Publish:
    qos = draw(st.integers(0, 2))
    return Publish(
        draw(text),
        draw(blobs),
        qos=qos,
        retain=draw(st.booleans()),
        dup=draw(st.booleans()) if qos else False,
        packet_id=draw(ids) if qos else None,
    )


@st.composite
def connects(draw: st.DrawFn) -> Connect:
    username = draw(st.none() | text)
    return Connect(
        draw(text),
        clean_session=draw(st.booleans()),
        keep_alive=draw(st.integers(0, 65_535)),
        will=draw(st.none() | wills),
        username=username,
        password=None if username is None else draw(st.none() | blobs),
    )


packets = st.one_of(
    connects(),
    st.builds(ConnAck, st.sampled_from(ConnAckCode), session_present=st.booleans()),
    publishes(),
    *(st.builds(cls, ids) for cls in (PubAck, PubRec, PubRel, PubComp, UnsubAck)),
    st.builds(Subscribe, ids, st.lists(st.tuples(text, st.integers(0, 2)), min_size=1).map(tuple)),
    st.builds(SubAck, ids, st.lists(st.sampled_from([0, 1, 2, 0x80]), min_size=1).map(tuple)),
    st.builds(Unsubscribe, ids, st.lists(text, min_size=1).map(tuple)),
    st.just(PingReq()),
    st.just(PingResp()),
    st.just(Disconnect()),
)


@settings(max_examples=400, deadline=None)
@given(packets)
def test_every_packet_round_trips(packet):
    data = encode(packet)
    assert decode(data) == packet
    framer = PacketFramer(1024 * 1024)
    framer.feed(data)
    assert framer.next_frame() == data


@settings(max_examples=400, deadline=None)
@given(packets, st.data())
def test_a_mutated_packet_decodes_or_raises_the_codecs_error(packet, data):
    frame = bytearray(encode(packet))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(frame) - 1))
        frame[index] = data.draw(st.integers(0, 255))
    try:
        decoded = decode(bytes(frame))
    except Mqtt311MalformedError as exc:
        assert exc.code == "mqtt311_malformed_packet"
        return
    # Whatever decodes is a real packet whose encoding decodes to itself.
    assert decode(encode(decoded)) == decoded


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_the_codecs_error(raw):
    with contextlib.suppress(Mqtt311MalformedError):
        decode(raw)
    connect_protocol(raw)  # the version peek never raises at all


@settings(max_examples=200, deadline=None)
@given(packets, st.integers(1, 64))
def test_truncated_or_padded_packets_are_refused(packet, cut):
    data = encode(packet)
    if len(data) > 2:
        with pytest.raises(Mqtt311MalformedError):
            decode(data[: max(2, len(data) - cut)])
    with pytest.raises(Mqtt311MalformedError):
        decode(data + b"\x00" * cut)


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (b"\x32\x05\x00\x01a\x00\x00", "packet identifier 0"),  # QoS 1, id 0
        (b"\x36\x03\x00\x01a", "QoS 3"),
        (b"\x38\x03\x00\x01a", "DUP set on a QoS 0"),
        (b"\x80\x02\x00\x01", "reserved flags"),  # SUBSCRIBE must carry 0b0010
        (b"\x82\x02\x00\x01", "without a topic filter"),
        (b"\x82\x06\x00\x01\x00\x01a\x04", "reserved bits"),
        (b"\xa2\x02\x00\x01", "without a topic filter"),
        (b"\x62\x02\x00\x00", "packet identifier 0"),
        (b"\x60\x02\x00\x01", "reserved flags"),  # PUBREL must carry 0b0010
        (b"\xc1\x00", "reserved flags"),
        (b"\xf0\x00", "reserved packet type"),
        (b"\x00\x00", "reserved packet type"),
        (b"\x30\x04\x00\x02\xc3\x28", "UTF-8"),
        (b"\x30\x03\x00\x01\x00", "U+0000"),
        (b"\x10\x0c\x00\x04MQTT\x04\x01\x00\x3c\x00\x00", "reserved CONNECT flag"),
        (b"\x10\x0c\x00\x04MQTT\x04\x08\x00\x3c\x00\x00", "without a Will"),
        (b"\x10\x0c\x00\x04MQTT\x04\x1c\x00\x3c\x00\x00", "Will QoS 3"),
        (b"\x10\x0c\x00\x04MQTT\x04\x40\x00\x3c\x00\x00", "password without a user name"),
        (b"\x10\x0c\x00\x04MQTT\x05\x02\x00\x3c\x00\x00", "is not MQTT 3.1.1"),
        (b"\xd0\x01\x00", "left over"),
    ],
)
def test_each_refusal_names_its_rule(frame, why):
    with pytest.raises(Mqtt311MalformedError, match=re.escape(why)):
        decode(frame)


def test_connect_protocol_reads_name_and_level_without_decoding():
    assert connect_protocol(encode(Connect("dev-1"))) == ("MQTT", 4)
    assert connect_protocol(b"\x10\x0e\x00\x06MQIsdp\x03\x02\x00\x3c") == ("MQIsdp", 3)
    assert connect_protocol(b"\x30\x03\x00\x01a") is None
    assert connect_protocol(b"\x10\x01\x00") is None
