"""Stream plumbing under a session: bounded packet reads, closing, refusing a CONNECT.

Shared by the server (before a session exists: a refused handshake still answers a CONNECT
with its reason) and the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import mqtt5
from mqtt5 import ConnAckReasonCode

from tether.cloud.gateway.errors import MalformedPacketError, PacketTooLargeError
from tether.cloud.gateway.framing import PacketFramer

READ_CHUNK = 64 * 1024
CLOSE_TIMEOUT = 2.0
# How long a closing connection may wait for the peer's TLS close_notify before it is aborted.
# The peer already has everything we wrote (close() flushes first); only the courtesy is cut.
CLOSE_GRACE = 0.5

READ_ERRORS = (OSError, ssl.SSLError, EOFError)


class PacketStream:
    """Bounded packet reads from a stream: a framer fed in ``READ_CHUNK`` pieces."""

    def __init__(self, reader: asyncio.StreamReader, max_packet_size: int) -> None:
        self._reader = reader
        self.framer = PacketFramer(max_packet_size)

    async def read(self) -> mqtt5.Packet | None:
        """The next packet, or ``None`` at end of stream (or a transport error).

        Raises ``PacketTooLargeError`` / ``MalformedPacketError`` for a bad stream.
        """
        while True:
            packet = self.framer.next_packet()
            if packet is not None:
                return packet
            try:
                data = await self._reader.read(READ_CHUNK)
            except READ_ERRORS:
                return None
            if not data:
                return None
            self.framer.feed(data)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a stream, flushing what was written, without waiting for ever or raising.

    A peer that does not answer the TLS close_notify within ``CLOSE_GRACE`` is aborted.
    """
    with contextlib.suppress(Exception):
        writer.close()
    try:
        async with asyncio.timeout(CLOSE_GRACE):
            await writer.wait_closed()
        return
    except TimeoutError:
        pass
    except Exception:
        return
    with contextlib.suppress(Exception):
        writer.transport.abort()
    with contextlib.suppress(Exception, TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await writer.wait_closed()


async def refuse_connect(
    stream: PacketStream,
    writer: asyncio.StreamWriter,
    *,
    reason: ConnAckReasonCode,
    reason_str: str,
    deadline: float,
) -> None:
    """After a refused handshake: answer a CONNECT that arrives before ``deadline``, then close.

    The client then sees why it was refused (CONNACK 0x86/0x87) instead of a bare close.
    Anything else, or nothing, just closes.
    """
    with contextlib.suppress(TimeoutError, MalformedPacketError, PacketTooLargeError):
        async with asyncio.timeout_at(deadline):
            packet = await stream.read()
            if isinstance(packet, mqtt5.ConnectPacket):
                writer.write(mqtt5.ConnAckPacket(reason_code=reason, reason_str=reason_str).write())
    await close_writer(writer)
