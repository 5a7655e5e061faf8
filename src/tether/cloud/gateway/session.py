"""One MQTT 5 session over an authenticated TLS stream: CONNECT, then packets until close.

The session runs after the TLS handshake and the authority's verdict, so it always knows the
``Identity`` on the other end. What it supports, and what it refuses:

- CONNECT within the connect deadline; the client id must equal the identity name (else
  CONNACK 0x85). Clean start only: no session state survives a connection, a requested
  session expiry is answered with Session Expiry Interval 0. Enhanced authentication (AUTH)
  is refused (CONNACK 0x8C).
- PUBLISH at QoS 0 and 1 (PUBACK). QoS 2 -> DISCONNECT 0x9B (CONNACK says Maximum QoS 1);
  retain -> DISCONNECT 0x9A (Retain Available 0); topic aliases -> DISCONNECT 0x94 (Topic
  Alias Maximum 0). A publish the policy refuses gets PUBACK 0x87 at QoS 1; at QoS 0, which
  has no acknowledgement, it gets DISCONNECT 0x87 so the client sees the refusal instead of
  silently losing messages.
- SUBSCRIBE with a reason code per filter: granted QoS 0/1, 0x87 refused by policy, 0x8F
  invalid filter, 0x9E shared subscription. Subscription identifiers -> DISCONNECT 0xA1.
- UNSUBSCRIBE, PINGREQ/PINGRESP, DISCONNECT, a Will message (checked against the policy at
  CONNECT, published on an abnormal close, Will Delay ignored).
- Keep-alive: silence for 1.5 x keep-alive -> DISCONNECT 0x8D and close.
- A packet bigger than the advertised maximum -> DISCONNECT 0x95 (CONNACK 0x95 before the
  session exists); undecodable bytes -> DISCONNECT 0x81 (CONNACK 0x81); a packet that is
  legal MQTT but wrong here -> DISCONNECT 0x82. Then close.

Outgoing QoS 1 messages respect the client's Receive Maximum and Maximum Packet Size; there is
no retransmission (no persistent sessions). Every read goes through a bounded
``PacketFramer``; the write buffer to a slow subscriber is bounded by dropping messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

import mqtt5
from mqtt5 import ConnAckReasonCode, DisconnectReasonCode, QoS

from tether.cloud.gateway.broker import Broker, Message, Subscription, attributed_properties
from tether.cloud.gateway.errors import MalformedPacketError, PacketTooLargeError
from tether.cloud.gateway.framing import PacketFramer
from tether.cloud.gateway.identity import Identity
from tether.cloud.gateway.policy import TopicPolicy
from tether.cloud.gateway.settings import GatewaySettings
from tether.cloud.gateway.topics import is_shared_subscription, is_valid_topic_filter

logger = logging.getLogger("tether.gateway")

READ_CHUNK = 64 * 1024
KEEP_ALIVE_GRACE = 1.5
CLOSE_TIMEOUT = 2.0
# How long a closing connection may wait for the peer's TLS close_notify before it is aborted.
# The peer already has everything we wrote (close() flushes first); only the courtesy is cut.
CLOSE_GRACE = 0.5
RECEIVE_MAXIMUM = 65_535

_READ_ERRORS = (OSError, ssl.SSLError, EOFError)


def log_event(
    level: int, code: str, message: str, *, peer: str, identity: str | None = None
) -> None:
    """Log one gateway event with its stable code in the text and in ``extra``.

    ``extra`` carries ``tether_code``, ``peer`` ("host:port") and ``identity`` (name or None)
    so log pipelines can match on them without parsing the message.
    """
    who = f"{identity}@{peer}" if identity else peer
    logger.log(
        level,
        "[%s] %s: %s",
        code,
        who,
        message,
        extra={"tether_code": code, "peer": peer, "identity": identity},
    )


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
            except _READ_ERRORS:
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


class Session:
    """One client's MQTT session; the server creates it after the authority's verdict.

    ``run`` drives it to the end; ``deliver`` and ``disconnect`` are called from other
    sessions and the server on the same event loop and never block.
    """

    def __init__(
        self,
        *,
        identity: Identity,
        peer: str,
        stream: PacketStream,
        writer: asyncio.StreamWriter,
        settings: GatewaySettings,
        broker: Broker,
        policy: TopicPolicy,
    ) -> None:
        self.identity = identity
        self.peer = peer
        self._stream = stream
        self._writer = writer
        self._settings = settings
        self._broker = broker
        self._policy = policy
        self._connected = False
        self._closing = False
        self._closed = asyncio.Event()
        self._keep_alive = settings.max_keep_alive
        self._client_receive_max = RECEIVE_MAXIMUM
        self._client_max_packet_size: int | None = None
        self._inflight: set[int] = set()
        self._next_packet_id = 1
        self._will: mqtt5.Will | None = None
        self._publish_will = True
        self.dropped_messages = 0

    @property
    def connected(self) -> bool:
        """Whether CONNECT was accepted and the session is not closing."""
        return self._connected and not self._closing

    async def run(
        self, *, connect_deadline: float, on_connected: Callable[[Session], None]
    ) -> None:
        """Read CONNECT before ``connect_deadline``, then serve packets until the end.

        ``on_connected`` is called once CONNECT is accepted, before CONNACK is written (the
        server uses it to register the session and take over an older one).
        """
        try:
            if await self._handshake(connect_deadline, on_connected):
                await self._serve()
        finally:
            self._closing = True
            self._broker.remove(self)
            if self._connected and self._will is not None and self._publish_will:
                self._route_will(self._will)
            await close_writer(self._writer)
            self._closed.set()

    def disconnect(self, reason: DisconnectReasonCode, reason_str: str | None = None) -> None:
        """Send DISCONNECT (once CONNECT was accepted) and close; idempotent."""
        if self._closing:
            return
        self._closing = True
        if reason in (DisconnectReasonCode.ADMINISTRATIVE_ACTION,):
            # A revoked or disabled identity must not get a last word through its Will.
            self._publish_will = False
        if self._connected:
            self._write(mqtt5.DisconnectPacket(reason_code=reason, reason_str=reason_str).write())
        with contextlib.suppress(Exception):
            self._writer.close()
        # close() waits for the peer's close_notify before the read side ends; do not let a
        # peer that never answers keep a dropped session alive.
        asyncio.get_running_loop().call_later(CLOSE_GRACE, self._abort)

    def _abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.transport.abort()

    async def wait_closed(self, timeout: float) -> bool:
        """Wait until ``run`` has finished; ``False`` if it did not within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                await self._closed.wait()
        except TimeoutError:
            return False
        return True

    def deliver(self, message: Message, qos: int) -> bool:
        """Write ``message`` to this client at ``qos`` now; ``False`` if it had to be dropped.

        Dropped when the session is closing, the client's Receive Maximum of unacknowledged
        QoS 1 messages is reached, the packet exceeds the client's Maximum Packet Size, or the
        write buffer already holds ``write_buffer_limit`` bytes (a slow consumer).
        """
        if not self.connected:
            return False
        packet_id: int | None = None
        if qos >= 1:
            if len(self._inflight) >= self._client_receive_max:
                return self._drop("client receive maximum reached")
            packet_id = self._allocate_packet_id()
        data = mqtt5.PublishPacket(
            message.topic,
            message.payload,
            qos=QoS(qos),
            packet_id=packet_id,
            payload_format_indicator=message.payload_format_indicator,
            message_expiry_interval=message.message_expiry_interval,
            content_type=message.content_type,
            response_topic=message.response_topic,
            correlation_data=message.correlation_data,
            user_properties=list(message.user_properties),
        ).write()
        if self._client_max_packet_size is not None and len(data) > self._client_max_packet_size:
            return self._drop("message exceeds the client's maximum packet size")
        transport = self._writer.transport
        if transport.get_write_buffer_size() > self._settings.write_buffer_limit:
            return self._drop("slow consumer: write buffer full")
        if packet_id is not None:
            self._inflight.add(packet_id)
        self._write(data)
        return True

    # -- internals ---------------------------------------------------------------------------

    def _drop(self, why: str) -> bool:
        self.dropped_messages += 1
        if self.dropped_messages == 1 or self.dropped_messages % 1000 == 0:
            log_event(
                logging.WARNING,
                "message_dropped",
                f"{why} ({self.dropped_messages} dropped so far)",
                peer=self.peer,
                identity=self.identity.name,
            )
        return False

    def _allocate_packet_id(self) -> int:
        while True:
            packet_id = self._next_packet_id
            self._next_packet_id = packet_id % 65_535 + 1
            if packet_id not in self._inflight:
                return packet_id

    def _write(self, data: bytes) -> None:
        if self._writer.is_closing():
            return
        with contextlib.suppress(Exception):
            self._writer.write(data)

    def _log(self, level: int, code: str, message: str) -> None:
        log_event(level, code, message, peer=self.peer, identity=self.identity.name)

    def _connack(self, reason: ConnAckReasonCode, reason_str: str) -> None:
        self._write(mqtt5.ConnAckPacket(reason_code=reason, reason_str=reason_str).write())

    async def _handshake(
        self, connect_deadline: float, on_connected: Callable[[Session], None]
    ) -> bool:
        try:
            async with asyncio.timeout_at(connect_deadline):
                packet = await self._stream.read()
        except TimeoutError:
            self._log(logging.WARNING, "mqtt_connect_timeout", "no CONNECT before the deadline")
            return False
        except PacketTooLargeError as exc:
            self._log(logging.WARNING, exc.code, exc.message)
            self._connack(ConnAckReasonCode.PACKET_TOO_LARGE, "packet too large")
            return False
        except MalformedPacketError as exc:
            self._log(logging.WARNING, exc.code, exc.message)
            self._connack(ConnAckReasonCode.MALFORMED_PACKET, "malformed packet")
            return False
        if packet is None:
            self._log(logging.INFO, "connection_closed", "closed before CONNECT")
            return False
        if not isinstance(packet, mqtt5.ConnectPacket):
            self._log(
                logging.WARNING,
                "mqtt_protocol_error",
                f"first packet is {type(packet).__name__}, not CONNECT",
            )
            return False
        refusal = self._check_connect(packet)
        if refusal is not None:
            reason, code, text = refusal
            self._log(logging.WARNING, code, f"CONNECT refused with 0x{int(reason):02x}: {text}")
            self._connack(reason, text)
            return False
        self._accept(packet, on_connected)
        return True

    def _check_connect(
        self, packet: mqtt5.ConnectPacket
    ) -> tuple[ConnAckReasonCode, str, str] | None:
        if packet.client_id != self.identity.name:
            return (
                ConnAckReasonCode.CLIENT_ID_NOT_VALID,
                "mqtt_client_id_mismatch",
                f"client id {packet.client_id!r} is not the certificate's identity "
                f"{self.identity.name!r}; connect with the device serial as client id",
            )
        if packet.authentication_method is not None:
            return (
                ConnAckReasonCode.BAD_AUTHENTICATION_METHOD,
                "mqtt_auth_method_unsupported",
                "enhanced authentication is not supported; the certificate is the credential",
            )
        will = packet.will
        if will is not None:
            if will.qos == QoS.EXACTLY_ONCE:
                return (
                    ConnAckReasonCode.QUALITY_NOT_SUPPORTED,
                    "mqtt_qos_unsupported",
                    "Will QoS 2",
                )
            if will.retain:
                return (
                    ConnAckReasonCode.RETAIN_NOT_SUPPORTED,
                    "mqtt_retain_unsupported",
                    "retained Will messages are not supported",
                )
            if not self._policy.may_publish(self.identity, will.topic):
                return (
                    ConnAckReasonCode.NOT_AUTHORIZED,
                    "publish_not_authorized",
                    f"Will topic {will.topic!r} is outside what this identity may publish",
                )
        return None

    def _accept(self, packet: mqtt5.ConnectPacket, on_connected: Callable[[Session], None]) -> None:
        server_keep_alive: int | None = None
        if packet.keep_alive == 0 or packet.keep_alive > self._settings.max_keep_alive:
            server_keep_alive = self._settings.max_keep_alive
            self._keep_alive = server_keep_alive
        else:
            self._keep_alive = packet.keep_alive
        self._client_receive_max = packet.receive_max or RECEIVE_MAXIMUM
        self._client_max_packet_size = packet.max_packet_size
        self._will = packet.will
        self._connected = True
        on_connected(self)
        self._write(
            mqtt5.ConnAckPacket(
                session_present=False,
                reason_code=ConnAckReasonCode.SUCCESS,
                # We keep no session state; tell a client that asked for one.
                session_expiry_interval=0 if packet.session_expiry_interval else None,
                server_keep_alive=server_keep_alive,
                receive_max=RECEIVE_MAXIMUM,
                topic_alias_max=0,
                max_qos=QoS.AT_LEAST_ONCE,
                retain_available=False,
                max_packet_size=self._settings.max_packet_size,
                wildcard_subscription_available=True,
                subscription_id_available=False,
                shared_subscription_available=False,
            ).write()
        )
        self._log(
            logging.INFO,
            "mqtt_connected",
            f"CONNECT accepted (client id {packet.client_id!r}, keep-alive {self._keep_alive} s, "
            f"clean start {packet.clean_start})",
        )

    async def _serve(self) -> None:
        while not self._closing:
            try:
                async with asyncio.timeout(self._keep_alive * KEEP_ALIVE_GRACE):
                    packet = await self._stream.read()
                    if packet is not None and not self._closing:
                        self._handle(packet)
                    if (
                        self._writer.transport.get_write_buffer_size()
                        > self._settings.max_packet_size
                    ):
                        # Stop reading while the client does not read its acknowledgements.
                        await self._writer.drain()
            except TimeoutError:
                self._log(logging.INFO, "mqtt_keep_alive_timeout", "silent beyond 1.5 x keep-alive")
                self.disconnect(DisconnectReasonCode.KEEP_ALIVE_TIMEOUT, "keep alive timeout")
                return
            except PacketTooLargeError as exc:
                self._log(logging.WARNING, exc.code, exc.message)
                self.disconnect(DisconnectReasonCode.PACKET_TOO_LARGE, "packet too large")
                return
            except MalformedPacketError as exc:
                self._log(logging.WARNING, exc.code, exc.message)
                self.disconnect(DisconnectReasonCode.MALFORMED_PACKET, "malformed packet")
                return
            except _READ_ERRORS:
                packet = None
            if packet is None:
                if not self._closing:
                    self._log(logging.INFO, "connection_closed", "closed without DISCONNECT")
                return

    def _handle(self, packet: mqtt5.Packet) -> None:
        if isinstance(packet, mqtt5.PublishPacket):
            self._on_publish(packet)
        elif isinstance(packet, mqtt5.PubAckPacket):
            self._inflight.discard(packet.packet_id)
        elif isinstance(packet, mqtt5.SubscribePacket):
            self._on_subscribe(packet)
        elif isinstance(packet, mqtt5.UnsubscribePacket):
            codes = [
                mqtt5.UnsubAckReasonCode.SUCCESS
                if self._broker.unsubscribe(self, pattern)
                else mqtt5.UnsubAckReasonCode.NO_SUBSCRIPTION_EXISTED
                for pattern in packet.patterns
            ]
            self._write(mqtt5.UnsubAckPacket(packet.packet_id, codes).write())
        elif isinstance(packet, mqtt5.PingReqPacket):
            self._write(mqtt5.PingRespPacket().write())
        elif isinstance(packet, mqtt5.DisconnectPacket):
            if packet.reason_code == DisconnectReasonCode.NORMAL_DISCONNECTION:
                self._publish_will = False
            self._log(
                logging.INFO,
                "mqtt_disconnected",
                f"client DISCONNECT 0x{int(packet.reason_code):02x}",
            )
            self._closing = True
        else:
            self._protocol_error(f"unexpected {type(packet).__name__} from a client")

    def _protocol_error(self, text: str) -> None:
        self._log(logging.WARNING, "mqtt_protocol_error", text)
        self.disconnect(DisconnectReasonCode.PROTOCOL_ERROR, text)

    def _on_publish(self, packet: mqtt5.PublishPacket) -> None:
        if packet.qos == QoS.EXACTLY_ONCE:
            self._log(logging.WARNING, "mqtt_qos_unsupported", "PUBLISH at QoS 2 (maximum is 1)")
            self.disconnect(DisconnectReasonCode.QOS_NOT_SUPPORTED, "QoS 2 is not supported")
            return
        if packet.retain:
            self._log(logging.WARNING, "mqtt_retain_unsupported", "PUBLISH with retain")
            self.disconnect(DisconnectReasonCode.RETAIN_NOT_SUPPORTED, "retain is not supported")
            return
        if packet.topic_alias is not None:
            self._log(logging.WARNING, "mqtt_topic_alias_invalid", "PUBLISH with a topic alias")
            self.disconnect(DisconnectReasonCode.TOPIC_ALIAS_INVALID, "topic aliases unsupported")
            return
        if packet.qos == QoS.AT_LEAST_ONCE and packet.packet_id is None:
            self._protocol_error("QoS 1 PUBLISH without a packet identifier")
            return
        if packet.subscription_ids:
            self._protocol_error("a client PUBLISH must not carry subscription identifiers")
            return
        if not self._policy.may_publish(self.identity, packet.topic):
            self._log(
                logging.WARNING,
                "publish_not_authorized",
                f"PUBLISH to {packet.topic!r} refused by policy",
            )
            if packet.qos == QoS.AT_LEAST_ONCE and packet.packet_id is not None:
                self._write(
                    mqtt5.PubAckPacket(
                        packet.packet_id,
                        reason_code=mqtt5.PubAckReasonCode.NOT_AUTHORIZED,
                        reason_str="topic not allowed for this identity",
                    ).write()
                )
            else:
                self.disconnect(DisconnectReasonCode.NOT_AUTHORIZED, "topic not allowed")
            return
        message = Message(
            topic=packet.topic,
            payload=packet.payload,
            qos=int(packet.qos),
            sender=self.identity,
            user_properties=attributed_properties(self.identity, packet.user_properties),
            payload_format_indicator=packet.payload_format_indicator,
            message_expiry_interval=packet.message_expiry_interval,
            content_type=packet.content_type,
            response_topic=packet.response_topic,
            correlation_data=packet.correlation_data,
        )
        matched = self._broker.publish(message, origin=self)
        if packet.qos == QoS.AT_LEAST_ONCE and packet.packet_id is not None:
            code = (
                mqtt5.PubAckReasonCode.SUCCESS
                if matched
                else mqtt5.PubAckReasonCode.NO_MATCHING_SUBSCRIBERS
            )
            self._write(mqtt5.PubAckPacket(packet.packet_id, reason_code=code).write())

    def _on_subscribe(self, packet: mqtt5.SubscribePacket) -> None:
        if packet.subscription_id is not None:
            self._log(logging.WARNING, "mqtt_subscription_ids_unsupported", "subscription id")
            self.disconnect(
                DisconnectReasonCode.SUBSCRIPTION_IDS_NOT_SUPPORTED,
                "subscription identifiers are not supported",
            )
            return
        codes: list[mqtt5.SubAckReasonCode] = []
        for topic_filter in packet.topic_filters:
            pattern = topic_filter.pattern
            if not is_valid_topic_filter(pattern):
                self._log(
                    logging.WARNING,
                    "mqtt_topic_filter_invalid",
                    f"SUBSCRIBE to {pattern!r} refused: not a valid topic filter",
                )
                codes.append(mqtt5.SubAckReasonCode.TOPIC_FILTER_INVALID)
            elif is_shared_subscription(pattern):
                self._log(
                    logging.WARNING,
                    "mqtt_shared_subscriptions_unsupported",
                    f"SUBSCRIBE to {pattern!r} refused: shared subscriptions are not supported",
                )
                codes.append(mqtt5.SubAckReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)
            elif not self._policy.may_subscribe(self.identity, pattern):
                self._log(
                    logging.WARNING,
                    "subscribe_not_authorized",
                    f"SUBSCRIBE to {pattern!r} refused by policy",
                )
                codes.append(mqtt5.SubAckReasonCode.NOT_AUTHORIZED)
            else:
                granted = min(int(topic_filter.max_qos), int(QoS.AT_LEAST_ONCE))
                self._broker.subscribe(
                    self, Subscription(pattern, granted, no_local=topic_filter.no_local)
                )
                codes.append(mqtt5.SubAckReasonCode(granted))
        self._write(mqtt5.SubAckPacket(packet.packet_id, codes).write())

    def _route_will(self, will: mqtt5.Will) -> None:
        message = Message(
            topic=will.topic,
            payload=will.payload or b"",
            qos=int(will.qos),
            sender=self.identity,
            user_properties=attributed_properties(self.identity, will.user_properties),
            payload_format_indicator=will.payload_format_indicator,
            message_expiry_interval=will.message_expiry_interval,
            content_type=will.content_type,
            response_topic=will.response_topic,
            correlation_data=will.correlation_data,
        )
        self._broker.publish(message, origin=self)
