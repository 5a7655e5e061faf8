"""Outgoing flow control for one session: the client's Receive Maximum and a bounded queue.

QoS 2 messages count like QoS 1 (MQTT 5 section 4.9): an identifier is in flight from the
PUBLISH until PUBCOMP; "QoS 1" below means "QoS 1 or 2". The identifier sits at the same
place in a 3.1.1 PUBLISH, so one window serves both protocol versions.

Sans-I/O: the session says how many bytes its socket buffer holds, this decides what to write.

- **QoS 1 window.** At most the client's Receive Maximum QoS 1 PUBLISH packets are
  unacknowledged at any time (MQTT 5 section 4.9). A message beyond the window *waits* in a
  FIFO queue and is written when a PUBACK opens the window, in order.
- **Slow consumer.** A socket buffer holding ``write_buffer_limit`` bytes or more is full:
  nothing more is written to it. A QoS 0 message for a full buffer is dropped (QoS 0 is "at
  most once", MQTT 5 section 4.3.1: losing one is within its contract). A QoS 1 message
  waits in the queue instead, and the queue is bounded by ``max_queued_messages`` and
  ``max_queued_bytes``: a QoS 1 message that does not fit would have to be lost, which
  at-least-once forbids, so the session ends with DISCONNECT 0x97 Quota exceeded (the spec's
  code for "an implementation or administrative imposed limit has been exceeded"; 0x8D Keep
  Alive timeout is for a silent client, and this one may be sending). The client reconnects
  and resubscribes when it can keep up.

So one session's outgoing memory is bounded by ``write_buffer_limit`` + one packet +
``max_queued_bytes``. Packet identifiers are given when a message is written, never while it
waits, so waiting messages never hold identifiers the window needs.

- **Resend after a reconnect.** Each offered message may carry a ``tag`` (the session passes
  the message and its QoS): the flow keeps it with the identifier while the message is in
  flight, and marks a QoS 2 identifier whose PUBREC came (``pubrel_sent``). ``unacknowledged``
  and ``waiting`` give a persistent session what it still owes when the connection ends;
  ``resume`` takes an identifier back into the window when the session resumes, so the
  PUBLISH resent with DUP=1 (or the PUBREL sent again) is acknowledged like any other
  (MQTT 5 section 4.4, 3.1.1 section 4.4).
"""

from __future__ import annotations

import enum
from collections import deque

MAX_PACKET_ID = 65_535


class Admission(enum.Enum):
    """What happened to an offered message."""

    WRITE = "write"  # write the returned bytes now
    QUEUED = "queued"  # waits for the window (or the buffer); written by ``release``
    DROPPED = "dropped"  # QoS 0 for a full buffer
    OVERFLOW = "overflow"  # QoS 1 that does not fit the queue: end the session with 0x97


def as_duplicate(data: bytes) -> bytes:
    """An encoded PUBLISH with its DUP flag set (fixed header bit 3): a redelivery."""
    return bytes([data[0] | 0x08]) + data[1:]


def with_packet_id(data: bytes, packet_id: int) -> bytes:
    """An encoded QoS 1 PUBLISH with its packet identifier replaced by ``packet_id``.

    The identifier follows the fixed header (type byte, variable-length remaining length) and
    the topic (two length bytes, then the topic): MQTT 5 section 3.3.2.
    """
    index = 1
    while data[index] & 0x80:
        index += 1
    index += 1
    topic_length = int.from_bytes(data[index : index + 2], "big")
    at = index + 2 + topic_length
    return data[:at] + packet_id.to_bytes(2, "big") + data[at + 2 :]


class OutboundFlow:
    """The QoS 1 window and wait queue of one session (see the module docstring)."""

    def __init__(
        self,
        *,
        receive_maximum: int,
        write_buffer_limit: int,
        max_queued_messages: int,
        max_queued_bytes: int,
    ) -> None:
        self.receive_maximum = receive_maximum
        self._write_buffer_limit = write_buffer_limit
        self._max_queued_messages = max_queued_messages
        self._max_queued_bytes = max_queued_bytes
        self._inflight: dict[int, object] = {}  # identifier -> tag, in the order written
        self._pubrel_sent: set[int] = set()
        self._next_id = 1
        self._queue: deque[tuple[bytes, object]] = deque()
        self._queued_bytes = 0

    @property
    def inflight(self) -> int:
        """QoS 1 messages written and not yet acknowledged."""
        return len(self._inflight)

    @property
    def queued(self) -> int:
        """QoS 1 messages waiting."""
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        """Bytes of the QoS 1 messages waiting."""
        return self._queued_bytes

    def full(self, buffered: int) -> bool:
        """Whether a socket buffer holding ``buffered`` bytes takes no more."""
        return buffered >= self._write_buffer_limit

    def offer(
        self, data: bytes, qos: int, buffered: int, tag: object = None
    ) -> tuple[Admission, bytes]:
        """Decide about one encoded PUBLISH (a QoS 1 one with any packet identifier).

        Returns the admission and, for ``WRITE``, the bytes to write (with their identifier).
        ``tag`` stays with a QoS 1/2 message until it is acknowledged (see ``unacknowledged``).
        """
        if qos == 0:
            return (Admission.DROPPED, b"") if self.full(buffered) else (Admission.WRITE, data)
        if not self._queue and self._window_open() and not self.full(buffered):
            return Admission.WRITE, self._stamp(data, tag)
        if (
            len(self._queue) >= self._max_queued_messages
            or self._queued_bytes + len(data) > self._max_queued_bytes
        ):
            return Admission.OVERFLOW, b""
        self._queue.append((data, tag))
        self._queued_bytes += len(data)
        return Admission.QUEUED, b""

    def in_flight(self, packet_id: int) -> bool:
        """Whether ``packet_id`` was written and not yet acknowledged."""
        return packet_id in self._inflight

    def acknowledge(self, packet_id: int) -> bool:
        """A PUBACK or PUBCOMP from the client; ``True`` if it acknowledged a message in flight."""
        if packet_id in self._inflight:
            del self._inflight[packet_id]
            self._pubrel_sent.discard(packet_id)
            return True
        return False

    def pubrel_sent(self, packet_id: int) -> None:
        """PUBREC came for an outgoing QoS 2 message and PUBREL went: only PUBCOMP is owed."""
        if packet_id in self._inflight:
            self._pubrel_sent.add(packet_id)

    def unacknowledged(self) -> list[tuple[int, object, bool]]:
        """(identifier, tag, PUBREL sent) of every message in flight, oldest first."""
        return [(i, tag, i in self._pubrel_sent) for i, tag in self._inflight.items()]

    def waiting(self) -> list[object]:
        """The tags of the messages that wait for the window, in order."""
        return [tag for _, tag in self._queue]

    def resume(self, packet_id: int, tag: object, *, pubrel_sent: bool) -> None:
        """Take an identifier owed from the previous connection back into the window.

        It counts against the window like any message in flight (the client's new Receive
        Maximum may be smaller: then nothing new is written until enough are acknowledged).
        """
        self._inflight[packet_id] = tag
        if pubrel_sent:
            self._pubrel_sent.add(packet_id)

    def release(self, buffered: int) -> list[bytes]:
        """The waiting messages that may be written now, oldest first, with identifiers."""
        out: list[bytes] = []
        while self._queue and self._window_open() and not self.full(buffered):
            data, tag = self._queue.popleft()
            self._queued_bytes -= len(data)
            buffered += len(data)
            out.append(self._stamp(data, tag))
        return out

    def _window_open(self) -> bool:
        return len(self._inflight) < self.receive_maximum

    def _stamp(self, data: bytes, tag: object) -> bytes:
        while True:
            packet_id = self._next_id
            self._next_id = packet_id % MAX_PACKET_ID + 1
            if packet_id not in self._inflight:
                break
        self._inflight[packet_id] = tag
        return with_packet_id(data, packet_id)
