"""A sans-I/O MQTT 3.1.1 codec: one complete packet's bytes <-> one packet value.

No maintained Python sans-I/O codec for 3.1.1 exists (the ``mqtt5`` codec is MQTT 5 only),
so this one is ours, small on purpose. The contract follows ``framing.py``: the framer cuts
the stream (the fixed header is the same in 3.1.1 and 5) and hands :func:`decode` exactly one
complete packet; :func:`decode` returns a value from :mod:`.packets` or raises
:class:`Mqtt311MalformedError`, and nothing else, whatever the bytes (the property tests in
``tests/cloud/gateway/test_mqtt311_codec.py`` hold it to that).

What the decoder refuses, each an "MUST" of the 3.1.1 spec about the packet itself: reserved
fixed-header flags (2.2.2), PUBLISH QoS 3 or DUP with QoS 0 (3.3.1-2), a packet identifier 0
(2.3.1-1), malformed UTF-8 or U+0000 in a string (1.5.3), a CONNECT whose reserved flag is set
or whose Will / password flags contradict each other (3.1.2-3, -11, -13, -15, -22), a SUBSCRIBE
or UNSUBSCRIBE without any filter (3.8.3-3, 3.10.3-2), a requested QoS with reserved bits set
(3.8.3-4), and any length that disagrees with the content. Whether a topic may be used, who
may connect and what a session accepts is the session's business, not the codec's.
"""

from __future__ import annotations

from tether.cloud.gateway.errors import MalformedPacketError
from tether.cloud.gateway.mqtt311.packets import (
    PROTOCOL_LEVEL,
    PROTOCOL_NAME,
    SUBACK_FAILURE,
    ConnAck,
    ConnAckCode,
    Connect,
    Disconnect,
    Packet,
    PacketType,
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

MAX_REMAINING_LENGTH = 268_435_455  # four bytes of variable length integer (spec 2.2.3)
_MAX_STRING = 65_535
_FIXED_FLAGS = {  # the flags nibble each type must carry (spec 2.2.2); PUBLISH is variable
    PacketType.PUBREL: 0b0010,
    PacketType.SUBSCRIBE: 0b0010,
    PacketType.UNSUBSCRIBE: 0b0010,
}
_ACKS: dict[PacketType, type[PubAck | PubRec | PubRel | PubComp | UnsubAck]] = {
    PacketType.PUBACK: PubAck,
    PacketType.PUBREC: PubRec,
    PacketType.PUBREL: PubRel,
    PacketType.PUBCOMP: PubComp,
    PacketType.UNSUBACK: UnsubAck,
}
_EMPTY: dict[PacketType, type[PingReq | PingResp | Disconnect]] = {
    PacketType.PINGREQ: PingReq,
    PacketType.PINGRESP: PingResp,
    PacketType.DISCONNECT: Disconnect,
}


class Mqtt311MalformedError(MalformedPacketError):
    """Bytes from a peer do not decode as an MQTT 3.1.1 packet: the connection is closed."""

    code = "mqtt311_malformed_packet"


def _malformed(why: str) -> Mqtt311MalformedError:
    return Mqtt311MalformedError(f"The peer sent a malformed MQTT 3.1.1 packet: {why}.")


class _Reader:
    """Reads the fields of one packet body; every short read is a malformed packet."""

    def __init__(self, data: bytes, start: int) -> None:
        self._data = data
        self.at = start

    @property
    def left(self) -> int:
        return len(self._data) - self.at

    def take(self, count: int) -> bytes:
        if count > self.left:
            raise _malformed("a field runs past the end of the packet")
        chunk = self._data[self.at : self.at + count]
        self.at += count
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def uint16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def packet_id(self) -> int:
        value = self.uint16()
        if value == 0:
            raise _malformed("packet identifier 0 (spec 2.3.1-1: it must be non-zero)")
        return value

    def binary(self) -> bytes:
        return self.take(self.uint16())

    def string(self) -> str:
        raw = self.binary()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _malformed(f"a string is not well-formed UTF-8 ({exc.reason})") from None
        if "\x00" in text:
            raise _malformed("a string contains U+0000 (spec 1.5.3-2)")
        return text

    def end(self) -> None:
        if self.left:
            raise _malformed(f"{self.left} bytes left over after the last field")


def decode(frame: bytes) -> Packet:
    """Decode exactly one complete packet; anything else raises ``Mqtt311MalformedError``."""
    if len(frame) < 2:
        raise _malformed("shorter than a fixed header")
    first = frame[0]
    try:
        kind = PacketType(first >> 4)
    except ValueError:
        raise _malformed(f"reserved packet type {first >> 4}") from None
    flags = first & 0x0F
    remaining, start = _remaining_length(frame)
    if start + remaining != len(frame):
        raise _malformed("the remaining length does not match the packet's size")
    if kind is not PacketType.PUBLISH and flags != _FIXED_FLAGS.get(kind, 0):
        raise _malformed(f"reserved flags 0x{flags:x} on {kind.name}")
    reader = _Reader(frame, start)
    packet = _decode_body(kind, flags, reader)
    reader.end()
    return packet


def _remaining_length(frame: bytes) -> tuple[int, int]:
    value = 0
    multiplier = 1
    index = 1
    while True:
        if index > 4 or index >= len(frame):
            raise _malformed("bad remaining length")
        byte = frame[index]
        value += (byte & 0x7F) * multiplier
        multiplier *= 128
        index += 1
        if not byte & 0x80:
            return value, index


def _decode_body(kind: PacketType, flags: int, reader: _Reader) -> Packet:
    if kind is PacketType.CONNECT:
        return _decode_connect(reader)
    if kind is PacketType.CONNACK:
        ack_flags = reader.byte()
        if ack_flags & 0xFE:
            raise _malformed("reserved CONNACK flags set")
        code = reader.byte()
        try:
            return ConnAck(ConnAckCode(code), session_present=bool(ack_flags & 1))
        except ValueError:
            raise _malformed(f"reserved CONNACK return code 0x{code:02x}") from None
    if kind is PacketType.PUBLISH:
        return _decode_publish(flags, reader)
    if kind in _ACKS:
        return _ACKS[kind](reader.packet_id())
    if kind is PacketType.SUBSCRIBE:
        packet_id = reader.packet_id()
        filters: list[tuple[str, int]] = []
        while reader.left:
            topic_filter = reader.string()
            options = reader.byte()
            if options & 0xFC or options == 3:
                raise _malformed("requested QoS with reserved bits set (spec 3.8.3-4)")
            filters.append((topic_filter, options))
        if not filters:
            raise _malformed("SUBSCRIBE without a topic filter (spec 3.8.3-3)")
        return Subscribe(packet_id, tuple(filters))
    if kind is PacketType.SUBACK:
        packet_id = reader.packet_id()
        codes = tuple(reader.take(reader.left))
        if not codes or any(code not in (0, 1, 2, SUBACK_FAILURE) for code in codes):
            raise _malformed("SUBACK return codes must be 0, 1, 2 or 0x80")
        return SubAck(packet_id, codes)
    if kind is PacketType.UNSUBSCRIBE:
        packet_id = reader.packet_id()
        patterns: list[str] = []
        while reader.left:
            patterns.append(reader.string())
        if not patterns:
            raise _malformed("UNSUBSCRIBE without a topic filter (spec 3.10.3-2)")
        return Unsubscribe(packet_id, tuple(patterns))
    return _EMPTY[kind]()


def _decode_connect(reader: _Reader) -> Connect:
    name = reader.string()
    level = reader.byte()
    if name != PROTOCOL_NAME or level != PROTOCOL_LEVEL:
        raise _malformed(f"protocol {name!r} level {level} is not MQTT 3.1.1")
    flags = reader.byte()
    if flags & 0x01:
        raise _malformed("the reserved CONNECT flag is set (spec 3.1.2-3)")
    has_will = bool(flags & 0x04)
    will_qos = (flags >> 3) & 0x03
    will_retain = bool(flags & 0x20)
    has_password = bool(flags & 0x40)
    has_username = bool(flags & 0x80)
    if not has_will and (will_qos or will_retain):
        raise _malformed("Will QoS or Will Retain without a Will (spec 3.1.2-13, -15)")
    if will_qos == 3:
        raise _malformed("Will QoS 3 (spec 3.1.2-14)")
    if has_password and not has_username:
        raise _malformed("a password without a user name (spec 3.1.2-22)")
    keep_alive = reader.uint16()
    client_id = reader.string()
    will = None
    if has_will:
        topic = reader.string()
        will = Will(topic, reader.binary(), qos=will_qos, retain=will_retain)
    username = reader.string() if has_username else None
    password = reader.binary() if has_password else None
    return Connect(
        client_id,
        clean_session=bool(flags & 0x02),
        keep_alive=keep_alive,
        will=will,
        username=username,
        password=password,
    )


def _decode_publish(flags: int, reader: _Reader) -> Publish:
    qos = (flags >> 1) & 0x03
    dup = bool(flags & 0x08)
    if qos == 3:
        raise _malformed("PUBLISH QoS 3 (spec 3.3.1-4)")
    if dup and qos == 0:
        raise _malformed("DUP set on a QoS 0 PUBLISH (spec 3.3.1-2)")
    topic = reader.string()
    packet_id = reader.packet_id() if qos else None
    payload = reader.take(reader.left)
    return Publish(topic, payload, qos=qos, retain=bool(flags & 0x01), dup=dup, packet_id=packet_id)


# -- encoding -------------------------------------------------------------------------------


def _string(text: str) -> bytes:
    return _binary(text.encode("utf-8"))


def _binary(data: bytes) -> bytes:
    if len(data) > _MAX_STRING:
        raise ValueError(f"a field of {len(data)} bytes does not fit MQTT's 2-byte length")
    return len(data).to_bytes(2, "big") + data


def _frame(first: int, body: bytes) -> bytes:
    length = len(body)
    if length > MAX_REMAINING_LENGTH:
        raise ValueError("packet too large for MQTT")
    encoded = bytearray()
    while True:
        byte = length % 128
        length //= 128
        encoded.append(byte | 0x80 if length else byte)
        if not length:
            break
    return bytes([first]) + bytes(encoded) + body


def _id(packet_id: int | None) -> bytes:
    if packet_id is None or not 1 <= packet_id <= 65_535:
        raise ValueError(f"packet identifier {packet_id!r} is not in 1..65535")
    return packet_id.to_bytes(2, "big")


def encode(packet: Packet) -> bytes:
    """The wire bytes of ``packet``; ``ValueError`` for a value the wire cannot carry."""
    match packet:
        case Publish():
            if packet.qos not in (0, 1, 2) or (packet.dup and packet.qos == 0):
                raise ValueError("PUBLISH QoS must be 0, 1 or 2, and DUP needs QoS > 0")
            flags = packet.dup << 3 | packet.qos << 1 | packet.retain
            body = _string(packet.topic) + (_id(packet.packet_id) if packet.qos else b"")
            return _frame(0x30 | flags, body + packet.payload)
        case PubAck() | PubRec() | PubComp() | UnsubAck() | PubRel():
            kind = next(k for k, cls in _ACKS.items() if isinstance(packet, cls))
            return _frame(kind << 4 | _FIXED_FLAGS.get(kind, 0), _id(packet.packet_id))
        case ConnAck():
            return _frame(0x20, bytes([int(packet.session_present), int(packet.return_code)]))
        case SubAck():
            return _frame(0x90, _id(packet.packet_id) + bytes(packet.return_codes))
        case Connect():
            return _encode_connect(packet)
        case Subscribe():
            if not packet.filters:
                raise ValueError("SUBSCRIBE needs a topic filter")
            body = b"".join(_string(f) + bytes([qos]) for f, qos in packet.filters)
            return _frame(0x82, _id(packet.packet_id) + body)
        case Unsubscribe():
            if not packet.filters:
                raise ValueError("UNSUBSCRIBE needs a topic filter")
            body = b"".join(_string(f) for f in packet.filters)
            return _frame(0xA2, _id(packet.packet_id) + body)
        case PingReq():
            return b"\xc0\x00"
        case PingResp():
            return b"\xd0\x00"
        case Disconnect():
            return b"\xe0\x00"
    raise TypeError(f"not an MQTT 3.1.1 packet: {packet!r}")


def _encode_connect(packet: Connect) -> bytes:
    will = packet.will
    flags = packet.clean_session << 1
    payload = _string(packet.client_id)
    if will is not None:
        flags |= 0x04 | will.qos << 3 | will.retain << 5
        payload += _string(will.topic) + _binary(will.payload)
    if packet.username is not None:
        flags |= 0x80
        payload += _string(packet.username)
    if packet.password is not None:
        if packet.username is None:
            raise ValueError("a password needs a user name in MQTT 3.1.1")
        flags |= 0x40
        payload += _binary(packet.password)
    header = _string(PROTOCOL_NAME) + bytes([PROTOCOL_LEVEL, flags])
    return _frame(0x10, header + packet.keep_alive.to_bytes(2, "big") + payload)
