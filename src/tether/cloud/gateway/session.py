"""One MQTT 5 session over an authenticated TLS stream: CONNECT, then packets until close.

The session runs after the TLS handshake and the authority's verdict, so it always knows the
``Identity`` on the other end. What it supports, and what it refuses:

- CONNECT within the connect deadline; the client id must equal the identity name (else
  CONNACK 0x85). Clean start only: no session state survives a connection, a requested
  session expiry is answered with Session Expiry Interval 0. Enhanced authentication (AUTH)
  is refused (CONNACK 0x8C).
- PUBLISH at QoS 0 and 1 (PUBACK). QoS 2 -> DISCONNECT 0x9B (CONNACK says Maximum QoS 1);
  retain -> DISCONNECT 0x9A (Retain Available 0); topic aliases -> DISCONNECT 0x94 (Topic
  Alias Maximum 0). A publish the policy refuses, or whose Response Topic the sender may not
  name (``TopicPolicy.may_request_reply``), gets PUBACK 0x87 at QoS 1; at QoS 0, which has no
  acknowledgement, it gets DISCONNECT 0x87 so the client sees the refusal instead of silently
  losing messages.
- SUBSCRIBE with a reason code per filter (:mod:`tether.cloud.gateway.subscriptions`):
  granted QoS 0/1, 0x87 refused by policy, 0x8F invalid filter, 0x9E shared subscription,
  0x97 over a quota. Subscription identifiers -> DISCONNECT 0xA1.
- UNSUBSCRIBE, PINGREQ/PINGRESP, DISCONNECT, a Will message (checked against the policy at
  CONNECT, published on an abnormal close, Will Delay ignored).
- Keep-alive: silence for 1.5 x keep-alive -> DISCONNECT 0x8D and close.
- A packet bigger than the advertised maximum -> DISCONNECT 0x95 (CONNACK 0x95 before the
  session exists); undecodable bytes -> DISCONNECT 0x81 (CONNACK 0x81); a packet that is
  legal MQTT but wrong here -> DISCONNECT 0x82. Then close.

CONNACK advertises the server's Receive Maximum (``receive_maximum``); every QoS 1 PUBLISH is
acknowledged before the next packet is read, and reading stops while the client does not read
its acknowledgements, so the client can never have more unacknowledged publishes with us
than it has sent in one read. Outgoing messages go through
:class:`~tether.cloud.gateway.flow.OutboundFlow`: the client's Receive Maximum (messages
beyond it wait, bounded), its Maximum Packet Size (bigger ones are dropped for it), and the
slow-consumer bounds. There is no retransmission (no persistent sessions). Every read goes
through a bounded ``PacketFramer`` (:mod:`tether.cloud.gateway.streams`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import mqtt5
from mqtt5 import ConnAckReasonCode, DisconnectReasonCode, QoS

from tether.cloud.gateway import subscriptions
from tether.cloud.gateway.broker import Broker, Message, attributed_properties
from tether.cloud.gateway.errors import MalformedPacketError, PacketTooLargeError
from tether.cloud.gateway.events import log_event
from tether.cloud.gateway.flow import Admission, OutboundFlow
from tether.cloud.gateway.identity import Identity
from tether.cloud.gateway.limits import LimitCode, LimitCounters
from tether.cloud.gateway.policy import TopicPolicy
from tether.cloud.gateway.reserved import RESERVED_PREFIX
from tether.cloud.gateway.settings import GatewaySettings
from tether.cloud.gateway.streams import CLOSE_GRACE, READ_ERRORS, PacketStream, close_writer

KEEP_ALIVE_GRACE = 1.5
DRAIN_POLL = 0.01  # seconds between checks of a full socket buffer with messages waiting
CLIENT_RECEIVE_MAXIMUM = 65_535  # what a CONNECT without Receive Maximum means (spec 3.1.2.11)
PLACEHOLDER_PACKET_ID = 1  # replaced by OutboundFlow when the message is written


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
        counters: LimitCounters,
    ) -> None:
        self.identity = identity
        self.peer = peer
        self._stream = stream
        self._writer = writer
        self._settings = settings
        self._broker = broker
        self._policy = policy
        self._counters = counters
        self._connected = False
        self._closing = False
        self._closed = asyncio.Event()
        self._keep_alive = settings.max_keep_alive
        self._client_max_packet_size: int | None = None
        self._flow = self._new_flow(CLIENT_RECEIVE_MAXIMUM)
        self._pump: asyncio.Task[None] | None = None
        self._over_quota = False
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
            if self._pump is not None:
                self._pump.cancel()
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
        """Write or queue ``message`` for this client at ``qos``; ``False`` if it was dropped.

        Dropped when the session is closing, the packet exceeds the client's Maximum Packet
        Size, or (QoS 0) the socket buffer is full. A QoS 1 message beyond the client's
        Receive Maximum waits; one that does not fit the wait queue ends the session with
        DISCONNECT 0x97 (see :mod:`tether.cloud.gateway.flow`).
        """
        if not self.connected:
            return False
        data = mqtt5.PublishPacket(
            message.topic,
            message.payload,
            qos=QoS(qos),
            packet_id=PLACEHOLDER_PACKET_ID if qos >= 1 else None,
            payload_format_indicator=message.payload_format_indicator,
            message_expiry_interval=message.message_expiry_interval,
            content_type=message.content_type,
            response_topic=message.response_topic,
            correlation_data=message.correlation_data,
            user_properties=list(message.user_properties),
        ).write()
        if self._client_max_packet_size is not None and len(data) > self._client_max_packet_size:
            return self._drop(LimitCode.OVERSIZE_FOR_CLIENT, "message exceeds the client's maximum")
        admission, ready = self._flow.offer(data, qos, self._buffered())
        if admission is Admission.WRITE:
            self._write(ready)
            return True
        if admission is Admission.QUEUED:
            self._counters.hit(
                LimitCode.RECEIVE_MAXIMUM_WAIT,
                f"QoS 1 message waits: {self._flow.inflight} unacknowledged (client Receive "
                f"Maximum {self._flow.receive_maximum}), {self._flow.queued} queued",
                peer=self.peer,
                identity=self.identity.name,
                level=logging.INFO,
            )
            self._start_pump()
            return True
        if admission is Admission.DROPPED:
            return self._drop(LimitCode.SLOW_CONSUMER_DROP, "slow consumer: QoS 0 message dropped")
        self._counters.hit(
            LimitCode.SLOW_CONSUMER_DISCONNECT,
            f"slow consumer: {self._flow.queued} QoS 1 messages ({self._flow.queued_bytes} "
            "bytes) wait and the next does not fit; DISCONNECT 0x97",
            peer=self.peer,
            identity=self.identity.name,
        )
        self.disconnect(DisconnectReasonCode.QUOTA_EXCEEDED, "slow consumer: queue full")
        return False

    # -- internals ---------------------------------------------------------------------------

    def _new_flow(self, client_receive_maximum: int) -> OutboundFlow:
        return OutboundFlow(
            receive_maximum=client_receive_maximum,
            write_buffer_limit=self._settings.write_buffer_limit,
            max_queued_messages=self._settings.max_queued_messages,
            max_queued_bytes=self._settings.max_queued_bytes,
        )

    def _buffered(self) -> int:
        return int(self._writer.transport.get_write_buffer_size())

    def _drop(self, code: LimitCode, why: str) -> bool:
        self.dropped_messages += 1
        self._counters.hit(code, why, peer=self.peer, identity=self.identity.name)
        return False

    def _release(self) -> None:
        """Write the waiting messages the window and the buffer now allow."""
        for data in self._flow.release(self._buffered()):
            self._write(data)

    def _start_pump(self) -> None:
        if self._flow.full(self._buffered()) and (self._pump is None or self._pump.done()):
            self._pump = asyncio.get_running_loop().create_task(self._drain_and_release())

    async def _drain_and_release(self) -> None:
        """Release while a full socket buffer drains; PUBACKs release the rest.

        It releases before it ends, so what still waits then waits for the window only (a
        PUBACK will come) and never for a buffer nobody watches.
        """
        while True:
            self._release()
            if self._closing or not self._flow.queued or not self._flow.full(self._buffered()):
                return
            try:
                await self._writer.drain()
            except Exception:
                return
            if self._flow.full(self._buffered()):
                # drain() returns at once when the transport is not paused (its high-water
                # mark is not ours): poll instead of spinning the loop.
                await asyncio.sleep(DRAIN_POLL)

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
            self._counters.hit(
                LimitCode.CONNECT_DEADLINE,
                "no CONNECT before the connect deadline",
                peer=self.peer,
                identity=self.identity.name,
            )
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
        if not self._policy.may_connect(self.identity):
            return (
                ConnAckReasonCode.NOT_AUTHORIZED,
                "connect_not_authorized",
                self._policy.explain(self.identity, "connect", self.identity.name),
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
            refusal = self._publish_refusal(will.topic, will.response_topic)
            if refusal is not None:
                return (ConnAckReasonCode.NOT_AUTHORIZED, refusal[0], f"Will: {refusal[1]}")
        return None

    def _publish_refusal(self, topic: str, response_topic: str | None) -> tuple[str, str] | None:
        """(code, words) if the policy refuses this topic or Response Topic, else None."""
        if not self._policy.may_publish(self.identity, topic):
            why = self._policy.explain(self.identity, "publish", topic)
            return (
                "publish_not_authorized",
                f"topic {topic!r} is outside what it may publish ({why})",
            )
        if response_topic is not None and not self._policy.may_request_reply(
            self.identity, response_topic
        ):
            why = self._policy.explain(self.identity, "publish", response_topic)
            return (
                "response_topic_not_authorized",
                f"Response Topic {response_topic!r} is outside what it may publish ({why})",
            )
        return None

    def _accept(self, packet: mqtt5.ConnectPacket, on_connected: Callable[[Session], None]) -> None:
        server_keep_alive: int | None = None
        if packet.keep_alive == 0 or packet.keep_alive > self._settings.max_keep_alive:
            server_keep_alive = self._settings.max_keep_alive
            self._keep_alive = server_keep_alive
        else:
            self._keep_alive = packet.keep_alive
        self._flow = self._new_flow(packet.receive_max or CLIENT_RECEIVE_MAXIMUM)
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
                receive_max=self._settings.receive_maximum,
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
                if self._over_quota:
                    # Told 0x97 and asking for more: read its next packet later, so a client
                    # that floods SUBSCRIBE gets a bounded share of the loop (not counted as
                    # keep-alive silence).
                    self._over_quota = False
                    await asyncio.sleep(self._settings.quota_backoff)
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
            except READ_ERRORS:
                packet = None
            if packet is None:
                if not self._closing:
                    self._log(logging.INFO, "connection_closed", "closed without DISCONNECT")
                return

    def _handle(self, packet: mqtt5.Packet) -> None:
        if isinstance(packet, mqtt5.PublishPacket):
            self._on_publish(packet)
        elif isinstance(packet, mqtt5.PubAckPacket):
            if self._flow.acknowledge(packet.packet_id):
                self._release()
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
        if packet.topic.startswith(RESERVED_PREFIX):
            self._on_reserved(packet)
            return
        refusal = self._publish_refusal(packet.topic, packet.response_topic)
        if refusal is not None:
            code, text = refusal
            self._log(logging.WARNING, code, f"PUBLISH refused by policy: {text}")
            if packet.qos == QoS.AT_LEAST_ONCE and packet.packet_id is not None:
                self._write(
                    mqtt5.PubAckPacket(
                        packet.packet_id,
                        reason_code=mqtt5.PubAckReasonCode.NOT_AUTHORIZED,
                        reason_str=code,
                    ).write()
                )
            else:
                self.disconnect(DisconnectReasonCode.NOT_AUTHORIZED, code)
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

    def _on_reserved(self, packet: mqtt5.PublishPacket) -> None:
        """A ``$tether/...`` request for the cloud itself (gateway/reserved.py): not routed."""
        handler = self._broker.reserved
        message = Message(
            topic=packet.topic,
            payload=packet.payload,
            qos=int(packet.qos),
            sender=self.identity,
            response_topic=packet.response_topic,
            correlation_data=packet.correlation_data,
        )
        accepted = handler is not None and handler.handle(self, message)
        if not accepted:
            self._log(logging.WARNING, "reserved_topic_refused", f"{packet.topic!r} refused")
        if packet.qos == QoS.AT_LEAST_ONCE and packet.packet_id is not None:
            code = (
                mqtt5.PubAckReasonCode.SUCCESS
                if accepted
                else mqtt5.PubAckReasonCode.NOT_AUTHORIZED
            )
            self._write(mqtt5.PubAckPacket(packet.packet_id, reason_code=code).write())
        elif not accepted:
            self.disconnect(DisconnectReasonCode.NOT_AUTHORIZED, "reserved_topic_refused")

    def _on_subscribe(self, packet: mqtt5.SubscribePacket) -> None:
        if packet.subscription_id is not None:
            self._log(logging.WARNING, "mqtt_subscription_ids_unsupported", "subscription id")
            self.disconnect(
                DisconnectReasonCode.SUBSCRIPTION_IDS_NOT_SUPPORTED,
                "subscription identifiers are not supported",
            )
            return
        codes = subscriptions.subscribe(
            packet,
            subscriber=self,
            identity=self.identity,
            peer=self.peer,
            broker=self._broker,
            policy=self._policy,
            settings=self._settings,
            counters=self._counters,
        )
        self._write(mqtt5.SubAckPacket(packet.packet_id, codes).write())
        self._over_quota = mqtt5.SubAckReasonCode.QUOTA_EXCEEDED in codes

    def _route_will(self, will: mqtt5.Will) -> None:
        # Checked again now: the policy may have changed since CONNECT (or withdrawn connect).
        refusal = self._publish_refusal(will.topic, will.response_topic)
        if refusal is not None:
            self._log(logging.WARNING, refusal[0], f"Will not published: {refusal[1]}")
            return
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
