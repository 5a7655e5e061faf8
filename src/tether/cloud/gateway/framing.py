"""Cut a byte stream into MQTT packets with a bounded buffer, and decode them with ``mqtt5``.

The codec (``mqtt5.read``) decodes a packet from a buffer but cannot tell "incomplete" from
"malformed" (both can raise ``IndexError``) and would need the whole packet buffered first.
So the framer reads only the fixed header (type byte + variable byte integer, spec 2.1.4),
refuses a packet bigger than the advertised maximum *before* buffering its body, and hands the
codec exactly one complete packet. The buffer therefore never holds more than one partial
packet (< ``max_packet_size``) plus the last chunk read.
"""

from __future__ import annotations

import mqtt5

from tether.cloud.gateway.errors import MalformedPacketError, PacketTooLargeError

_MAX_LENGTH_BYTES = 4  # the variable byte integer of the remaining length (spec 1.5.5)


class PacketFramer:
    """Accumulates received bytes and yields complete packets, one at a time.

    Use: ``feed(chunk)``, then call ``next_packet()`` until it returns ``None``. It raises
    ``PacketTooLargeError`` or ``MalformedPacketError`` as soon as a header proves the stream
    bad; after an error the framer must be discarded (the connection is closed).
    """

    def __init__(self, max_packet_size: int) -> None:
        if max_packet_size < 2:
            raise ValueError("max_packet_size must be at least 2 bytes")
        self.max_packet_size = max_packet_size
        self._buffer = bytearray()
        self._offset = 0

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet part of a returned packet."""
        return len(self._buffer) - self._offset

    def feed(self, data: bytes) -> None:
        """Append received bytes (callers read in bounded chunks)."""
        if self._offset:
            # Compact lazily: one copy per feed, not one per packet.
            del self._buffer[: self._offset]
            self._offset = 0
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next complete packet's bytes, or ``None`` if more bytes are needed."""
        start = self._offset
        available = len(self._buffer) - start
        if available < 2:
            return None
        remaining = 0
        multiplier = 1
        index = 1
        while True:
            if index > _MAX_LENGTH_BYTES:
                raise MalformedPacketError(
                    "The packet's remaining length is longer than 4 bytes; the peer does not "
                    "speak MQTT 5.",
                )
            if index >= available:
                return None
            byte = self._buffer[start + index]
            remaining += (byte & 0x7F) * multiplier
            multiplier *= 128
            index += 1
            if not byte & 0x80:
                break
        total = index + remaining
        if total > self.max_packet_size:
            raise PacketTooLargeError(
                f"The peer sent a {total}-byte packet; the maximum is {self.max_packet_size} "
                "bytes (advertised in CONNACK). Send smaller messages.",
            )
        if available < total:
            return None
        self._offset = start + total
        return bytes(self._buffer[start : start + total])

    def next_packet(self) -> mqtt5.Packet | None:
        """The next complete packet decoded, or ``None`` if more bytes are needed."""
        frame = self.next_frame()
        return None if frame is None else decode(frame)


def decode(frame: bytes) -> mqtt5.Packet:
    """Decode exactly one complete packet; anything else is ``MalformedPacketError``."""
    try:
        packet, consumed = mqtt5.read(memoryview(frame))
    except Exception as exc:  # the codec raises ValueError, IndexError, UnicodeDecodeError...
        raise MalformedPacketError(
            f"The peer sent a malformed MQTT 5 packet ({exc}).",
        ) from exc
    except BaseException as exc:
        # A Rust panic in the codec surfaces as pyo3's PanicException, a BaseException.
        if type(exc).__name__ != "PanicException":
            raise
        raise MalformedPacketError("The peer sent a packet the MQTT 5 codec cannot read.") from exc
    if consumed != len(frame):
        raise MalformedPacketError(
            "The packet's remaining length does not match its content; the peer's packet is "
            "malformed.",
        )
    return packet


def connect_protocol(frame: bytes) -> tuple[str, int] | None:
    """The (protocol name, protocol level) a CONNECT frame announces, or ``None``.

    Read without decoding, so the session can pick the codec (level 4: MQTT 3.1.1, level 5:
    MQTT 5) before either is asked. ``None`` when the frame is not a CONNECT or too short to
    say; never raises. The variable header starts the same way in every MQTT version: a
    2-byte length, the name, one level byte (3.1.1 section 3.1.2.1, MQTT 5 section 3.1.2.1).
    """
    if len(frame) < 2 or frame[0] != 0x10:
        return None
    index = 1
    while index < len(frame) and index <= _MAX_LENGTH_BYTES and frame[index] & 0x80:
        index += 1
    index += 1
    if index + 2 > len(frame):
        return None
    name_length = int.from_bytes(frame[index : index + 2], "big")
    level_at = index + 2 + name_length
    if level_at >= len(frame):
        return None
    name = frame[index + 2 : level_at].decode("utf-8", "replace")
    return name, frame[level_at]


_RESERVED_OPTION_BITS = 0xC0  # SUBSCRIBE subscription options bits 6 and 7 (MQTT 5 3.8.3.1)


def subscribe_options_reserved(frame: bytes) -> bool:
    """Whether an MQTT 5 SUBSCRIBE frame has reserved bits set in a subscription options byte.

    The ``mqtt5`` codec ignores those bits, and [MQTT-3.8.3-5] makes them a malformed packet,
    so the frame the codec accepted is walked once more: fixed header, packet identifier,
    properties (a variable byte integer length), then (2-byte length, filter, options) pairs.
    """
    try:
        index = _skip_variable_int(frame, 1) + 2
        length = 0
        multiplier = 1
        while True:
            byte = frame[index]
            length += (byte & 0x7F) * multiplier
            multiplier *= 128
            index += 1
            if not byte & 0x80:
                break
        index += length
        while index < len(frame):
            index += 2 + int.from_bytes(frame[index : index + 2], "big")
            if frame[index] & _RESERVED_OPTION_BITS:
                return True
            index += 1
    except IndexError as exc:
        raise MalformedPacketError("The peer sent a SUBSCRIBE cut short.") from exc
    return False


def _skip_variable_int(frame: bytes, index: int) -> int:
    while frame[index] & 0x80:
        index += 1
    return index + 1
