"""What one session writes to its client: the outgoing window, the wait queue, the pump.

:class:`~tether.cloud.gateway.flow.OutboundFlow` decides (sans-I/O); the outbox does the I/O
around it for a session: it writes what may go now, counts and logs what waits or is
dropped, drains a full socket buffer in a background task, and ends the session (through
the callback it was given) when a QoS 1/2 message does not fit the queue.

Writes are coalesced (issue 17, messages hot path): ``write`` appends to a pending list and
the list goes to the transport as one ``write`` at the end of the event-loop iteration (or as
soon as it holds ``FLUSH_BYTES``). Every transport write under TLS is one SSL_write (a record,
a MAC, usually a ``send``), so 500 PUBACKs answered for one 64 KiB read cost a few records
instead of 500. Order is kept (one list, one transport), the pending bytes count as buffered
for every flow decision, and whoever closes the transport flushes first (``flush``), so no
acknowledgement or DISCONNECT written before a close is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from tether.cloud.gateway.flow import Admission, OutboundFlow, as_duplicate, with_packet_id
from tether.cloud.gateway.limits import LimitCode, LimitCounters
from tether.cloud.gateway.settings import GatewaySettings

DRAIN_POLL = 0.01  # seconds between checks of a full socket buffer with messages waiting
# Pending bytes that are written at once instead of at the end of the loop iteration: one
# TLS record's worth of plaintext (RFC 8446 5.1), so a batch is never held back for long.
FLUSH_BYTES = 16 * 1024


class Outbox:
    """The outgoing side of one session (see the module docstring)."""

    def __init__(
        self,
        writer: asyncio.StreamWriter,
        *,
        settings: GatewaySettings,
        counters: LimitCounters,
        peer: str,
        identity: str,
        overflow: Callable[[], None],
    ) -> None:
        self._writer = writer
        self._settings = settings
        self._counters = counters
        self._peer = peer
        self._identity = identity
        self._overflow = overflow
        self._flow = self._new_flow(settings.max_inflight_messages)
        self._pump: asyncio.Task[None] | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._flush_scheduled = False
        self.closing = False
        self.dropped = 0

    def open_window(self, client_receive_maximum: int) -> None:
        """CONNECT accepted: the client's Receive Maximum (or the 3.1.1 window) applies."""
        self._flow = self._new_flow(client_receive_maximum)

    def write(self, data: bytes) -> None:
        """Write bytes, in order, by the end of this loop iteration (nothing once the
        transport is closing): see the module docstring."""
        if self._writer.is_closing():
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Hand the pending bytes to the transport as one write (before any close, too)."""
        self._flush_scheduled = False
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        self._pending = []
        self._pending_bytes = 0
        if self._writer.is_closing():
            return
        with contextlib.suppress(Exception):
            self._writer.write(data)

    async def drain(self) -> None:
        """Flush, then wait until the transport's buffer is below its high-water mark."""
        self.flush()
        await self._writer.drain()

    def buffered(self) -> int:
        """Bytes written and not yet sent: the socket's write buffer plus the pending ones."""
        return int(self._writer.transport.get_write_buffer_size()) + self._pending_bytes

    def send(self, data: bytes, qos: int, tag: object = None) -> bool | None:
        """Offer one encoded PUBLISH: ``True`` written now, ``None`` waits, ``False`` dropped.

        A QoS 1/2 message that does not fit the queue calls ``overflow`` (the session ends
        with DISCONNECT 0x97) and counts as dropped.
        """
        flow = self._flow
        admission, ready = flow.offer(data, qos, self.buffered(), tag)
        if admission is Admission.WRITE:
            self.write(ready)
            return True
        if admission is Admission.QUEUED:
            self._counters.hit(
                LimitCode.RECEIVE_MAXIMUM_WAIT,
                f"QoS {qos} message waits: {flow.inflight} unacknowledged (client Receive "
                f"Maximum {flow.receive_maximum}), {flow.queued} queued",
                peer=self._peer,
                identity=self._identity,
                level=logging.INFO,
            )
            self._start_pump()
            return None
        if admission is Admission.DROPPED:
            return self.drop(LimitCode.SLOW_CONSUMER_DROP, "slow consumer: QoS 0 message dropped")
        self._counters.hit(
            LimitCode.SLOW_CONSUMER_DISCONNECT,
            f"slow consumer: {flow.queued} messages ({flow.queued_bytes} "
            "bytes) wait and the next does not fit; DISCONNECT 0x97",
            peer=self._peer,
            identity=self._identity,
        )
        self._overflow()
        return False

    def drop(self, code: LimitCode, why: str) -> bool:
        """Count and log a message dropped for this client; always ``False``."""
        self.dropped += 1
        self._counters.hit(code, why, peer=self._peer, identity=self._identity)
        return False

    def in_flight(self, packet_id: int) -> bool:
        """Whether an outgoing QoS 1/2 identifier awaits its acknowledgement."""
        return self._flow.in_flight(packet_id)

    def acknowledge(self, packet_id: int) -> None:
        """PUBACK, PUBCOMP or a refusing PUBREC: free the identifier, release what waits."""
        if self._flow.acknowledge(packet_id):
            self._release()

    def pubrel_sent(self, packet_id: int) -> None:
        """PUBREL went for an outgoing QoS 2 identifier: only PUBCOMP is owed now."""
        self._flow.pubrel_sent(packet_id)

    def owed(self) -> tuple[list[tuple[int, object, bool]], list[object]]:
        """What the client is still owed: (identifier, tag, PUBREL sent) in flight, then the
        tags of the messages waiting for the window (see :mod:`.flow`)."""
        return self._flow.unacknowledged(), self._flow.waiting()

    def resend(self, packet_id: int, data: bytes | None, tag: object) -> None:
        """After a reconnect: the PUBLISH ``data`` again with DUP=1 under ``packet_id``, or
        (``data`` None) PUBREL again; either way the identifier is in flight once more."""
        self._flow.resume(packet_id, tag, pubrel_sent=data is None)
        if data is None:
            # PUBREL, reason Success: the same four bytes in 3.1.1 and MQTT 5 (MQTT 5 3.6.2.1).
            self.write(bytes([0x62, 0x02]) + packet_id.to_bytes(2, "big"))
        else:
            self.write(as_duplicate(with_packet_id(data, packet_id)))

    def stop(self) -> None:
        """The session ends: stop the pump."""
        self.closing = True
        if self._pump is not None:
            self._pump.cancel()

    def _new_flow(self, client_receive_maximum: int) -> OutboundFlow:
        settings = self._settings
        return OutboundFlow(
            receive_maximum=client_receive_maximum,
            write_buffer_limit=settings.write_buffer_limit,
            max_queued_messages=settings.max_queued_messages,
            max_queued_bytes=settings.max_queued_bytes,
        )

    def _release(self) -> None:
        """Write the waiting messages the window and the buffer now allow."""
        for data in self._flow.release(self.buffered()):
            self.write(data)

    def _start_pump(self) -> None:
        if self._flow.full(self.buffered()) and (self._pump is None or self._pump.done()):
            self._pump = asyncio.get_running_loop().create_task(self._drain_and_release())

    async def _drain_and_release(self) -> None:
        """Release while a full socket buffer drains; acknowledgements release the rest.

        It releases before it ends, so what still waits then waits for the window only (an
        acknowledgement will come) and never for a buffer nobody watches.
        """
        while True:
            self._release()
            if self.closing or not self._flow.queued or not self._flow.full(self.buffered()):
                return
            try:
                await self.drain()
            except Exception:
                return
            if self._flow.full(self.buffered()):
                # drain() returns at once when the transport is not paused (its high-water
                # mark is not ours): poll instead of spinning the loop.
                await asyncio.sleep(DRAIN_POLL)
