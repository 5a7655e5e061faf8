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
from tether.cloud.gateway.framing import PacketFramer, connect_protocol, decode
from tether.cloud.gateway.mqtt311.codec import encode as encode311
from tether.cloud.gateway.mqtt311.packets import ConnAck, ConnAckCode
from tether.cloud.gateway.protocol import MQTT5_LEVEL, MQTT311_LEVEL, MQTT311_NAME

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
        """The next MQTT 5 packet, or ``None`` at end of stream (or a transport error).

        Raises ``PacketTooLargeError`` / ``MalformedPacketError`` for a bad stream.
        """
        frame = await self.read_frame()
        return None if frame is None else decode(frame)

    def buffered_frame(self) -> bytes | None:
        """The next complete packet's bytes if already read, else ``None`` (never waits).

        Raises like ``read_frame`` when a fixed header proves the stream bad.
        """
        return self.framer.next_frame()

    async def read_frame(self) -> bytes | None:
        """The next complete packet's bytes, undecoded (the session picks the codec).

        ``None`` at end of stream; raises ``PacketTooLargeError`` / ``MalformedPacketError``
        when a fixed header proves the stream bad.
        """
        while True:
            frame = self.framer.next_frame()
            if frame is not None:
                return frame
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

    The client then sees why it was refused (MQTT 5 CONNACK 0x86/0x87, 3.1.1 0x04/0x05)
    instead of a bare close.
    Anything else, or nothing, just closes.
    """
    with contextlib.suppress(TimeoutError, MalformedPacketError, PacketTooLargeError):
        async with asyncio.timeout_at(deadline):
            frame = await stream.read_frame()
            announced = None if frame is None else connect_protocol(frame)
            if frame is None or announced is None:
                pass
            elif announced[1] == MQTT5_LEVEL:
                if isinstance(decode(frame), mqtt5.ConnectPacket):
                    ack = mqtt5.ConnAckPacket(reason_code=reason, reason_str=reason_str)
                    writer.write(ack.write())
            else:
                # 3.1.1 (or older): its CONNACK codes are few. 0x04 Bad user name or password
                # for a credential refused (revoked, unknown: MQTT 5's 0x86), 0x05 Not
                # authorized for the rest; 0x01 for an unsupported protocol level.
                code = ConnAckCode.UNACCEPTABLE_PROTOCOL_VERSION
                if announced == (MQTT311_NAME, MQTT311_LEVEL):
                    code = (
                        ConnAckCode.BAD_USERNAME_OR_PASSWORD
                        if reason == ConnAckReasonCode.BAD_USER_NAME_OR_PASSWORD
                        else ConnAckCode.NOT_AUTHORIZED
                    )
                writer.write(encode311(ConnAck(code)))
    await close_writer(writer)
