"""One MQTT session over an authenticated TLS stream: CONNECT, then packets until close.

The session runs after the TLS handshake and the authority's verdict, so it always knows the
``Identity`` on the other end. It is version-neutral: the first frame's protocol level picks a
:class:`~tether.cloud.gateway.protocol.ProtocolHandler` (MQTT 5 in :mod:`.protocol5`, MQTT
3.1.1 in :mod:`.protocol311`; any other level gets the 3.1.1 CONNACK 0x01), which decodes,
checks and answers every packet; the session keeps what both versions share:

- the connect deadline, keep-alive (silence for 1.5 x keep-alive ends the session), a
  bounded ``PacketStream`` under every read (a packet bigger than the maximum or bytes that
  do not frame end the session: MQTT 5 says why in CONNACK / DISCONNECT, 3.1.1 just closes);
- the identity rules: the client id must equal the identity name, every publish (and Will)
  is checked against the same ``TopicPolicy`` and attributed to the certificate;
- the subscriptions (:mod:`.subscriptions`: policy, quotas, ``$sender`` views, identifiers);
- outgoing flow (:mod:`.outbox` over :mod:`.flow`): the client's Receive Maximum (QoS 1 and
  2 beyond it wait, bounded), its Maximum Packet Size (bigger messages are dropped for it),
  the slow-consumer bounds; QoS 2 identifiers stay in flight until PUBCOMP;
- incoming QoS 2 (:mod:`.exactly_once`), retained messages (:mod:`.retained`, when the
  gateway has a store: stored before the acknowledgement, sent after SUBACK);
- the Will, published on an abnormal close unless the identity was dropped administratively.
  Its delay is min(Will Delay Interval, Session Expiry): the gateway grants Session Expiry 0
  (no session outlives its connection yet), so the session ends with the connection and the
  Will is published then (MQTT 5 3.1.3.2.2).

Every QoS 1 PUBLISH is acknowledged before the next packet is read (the PUBACK goes into the
outbox, which hands a loop iteration's writes to the transport at once), and reading stops
while the client does not read its acknowledgements, so a client can never have more
unacknowledged publishes with us than it has sent in one read. There is no retransmission
(no persistent sessions yet).

Over ~400 lines on purpose: this is the one place a connection's life is read top to bottom;
what splits along a clean seam already lives apart (protocol handlers, :mod:`.outbox`,
:mod:`.subscriptions`, :mod:`.session_state`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from mqtt5 import ConnAckReasonCode, DisconnectReasonCode

from tether.cloud.gateway import rules
from tether.cloud.gateway.broker import Broker, Message
from tether.cloud.gateway.errors import MalformedPacketError, PacketTooLargeError
from tether.cloud.gateway.events import log_event
from tether.cloud.gateway.exactly_once import ExactlyOnce
from tether.cloud.gateway.framing import connect_protocol
from tether.cloud.gateway.identity import Identity
from tether.cloud.gateway.limits import LimitCode, LimitCounters
from tether.cloud.gateway.mqtt311.codec import encode as encode311
from tether.cloud.gateway.mqtt311.packets import ConnAck, ConnAckCode
from tether.cloud.gateway.outbox import Outbox
from tether.cloud.gateway.policy import TopicPolicy
from tether.cloud.gateway.protocol import MQTT5_LEVEL, MQTT311_LEVEL, MQTT311_NAME, ProtocolHandler
from tether.cloud.gateway.protocol5 import Mqtt5Handler
from tether.cloud.gateway.protocol5_connect import mqtt5_connack
from tether.cloud.gateway.protocol311 import Mqtt311Handler
from tether.cloud.gateway.session_state import SessionState
from tether.cloud.gateway.settings import GatewaySettings
from tether.cloud.gateway.stores import StoredSession
from tether.cloud.gateway.streams import CLOSE_GRACE, READ_ERRORS, PacketStream, close_writer
from tether.cloud.gateway.subscriptions import SessionSubscriptions

KEEP_ALIVE_GRACE = 1.5


@dataclass(frozen=True, slots=True)
class Accepted:
    """What CONNACK says about an accepted CONNECT."""

    server_keep_alive: int | None  # None: the client's keep-alive stands
    session_present: bool
    session_expiry: int  # granted (0: nothing outlives the connection)


CONNECT_HEADER = 0x10  # the first byte of every CONNECT, in every MQTT version


class Session(SessionState):
    """One client's MQTT session; the server creates it after the authority's verdict.

    ``run`` drives it to the end; ``deliver`` and ``disconnect`` are called from other
    sessions and the server on the same event loop and never block. The methods without a
    leading underscore below ``deliver`` are the API of the protocol handlers.
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
        self.settings = settings
        self.policy = policy
        self.counters = counters
        self._stream = stream
        self._writer = writer
        self._broker = broker
        self.subscriptions = SessionSubscriptions(
            self,
            identity=identity,
            peer=peer,
            broker=broker,
            policy=policy,
            settings=settings,
            counters=counters,
        )
        self._protocol: ProtocolHandler | None = None
        self._connected = False
        self._closing = False
        self._closed = asyncio.Event()
        self._keep_alive = settings.max_keep_alive
        self._client_max_packet_size: int | None = None
        self._outbox = Outbox(
            writer,
            settings=settings,
            counters=counters,
            peer=peer,
            identity=identity.name,
            overflow=lambda: self.disconnect(
                DisconnectReasonCode.QUOTA_EXCEEDED, "slow consumer: queue full"
            ),
        )
        self.exactly_once = ExactlyOnce(settings.receive_maximum)  # incoming QoS 2
        self.over_quota = False
        self._retained_tasks: set[asyncio.Task[None]] = set()
        self._will: Message | None = None
        self._will_retain = False
        self._will_delay = 0
        self._publish_will = True
        self._expiry = 0  # the Session Expiry granted (0: the session ends with the connection)
        self._discard = False
        self._resumed: StoredSession | None = None

    @property
    def connected(self) -> bool:
        """Whether CONNECT was accepted and the session is not closing."""
        return self._connected and not self._closing

    @property
    def dropped_messages(self) -> int:
        """Messages dropped for this client (too big for it, or QoS 0 to a full buffer)."""
        return self._outbox.dropped

    @property
    def protocol_version(self) -> str | None:
        """``"5"`` or ``"3.1.1"`` once the first frame was read."""
        return None if self._protocol is None else self._protocol.version

    async def run(
        self, *, connect_deadline: float, on_connected: Callable[[Session], None]
    ) -> None:
        """Read CONNECT before ``connect_deadline``, then serve packets until the end.

        ``on_connected`` is called once CONNECT is accepted, before CONNACK is written (the
        server uses it to register the session and take over an older one).
        """
        self._on_connected = on_connected
        try:
            if await self._handshake(connect_deadline):
                await self._serve()
        finally:
            self._closing = True
            self._outbox.stop()
            for task in self._retained_tasks:
                task.cancel()
            snapshot = self.subscriptions.snapshot()
            self.subscriptions.clear()
            await self._finish(snapshot)
            self._outbox.flush()
            await close_writer(self._writer)
            self._closed.set()

    def disconnect(self, reason: DisconnectReasonCode, reason_str: str | None = None) -> None:
        """Send DISCONNECT (MQTT 5, once CONNECT was accepted) and close; idempotent."""
        if self._closing:
            return
        self._closing = True
        if reason in (DisconnectReasonCode.ADMINISTRATIVE_ACTION,):
            # A revoked or disabled identity must not get a last word through its Will, nor
            # keep a session to resume.
            self._publish_will = False
            self._discard = True
        if self._connected and self._protocol is not None:
            data = self._protocol.disconnect_packet(reason, reason_str)
            if data is not None:
                self.write(data)
        self._outbox.flush()  # what was written goes before the close (outbox.py)
        with contextlib.suppress(Exception):
            self._writer.close()
        # close() waits for the peer's close_notify before the read side ends; do not let a
        # peer that never answers keep a dropped session alive.
        asyncio.get_running_loop().call_later(CLOSE_GRACE, self._abort)

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
        Size, or (QoS 0) the socket buffer is full. A QoS 1 or 2 message beyond the client's
        Receive Maximum waits; one that does not fit the wait queue ends the session with
        DISCONNECT 0x97 (see :mod:`tether.cloud.gateway.flow`).
        """
        if not self.connected or self._protocol is None:
            return False
        message = self.subscriptions.as_forwarded(message)
        data = self._protocol.encode_publish(message, qos)
        if self._client_max_packet_size is not None and len(data) > self._client_max_packet_size:
            return self._outbox.drop(
                LimitCode.OVERSIZE_FOR_CLIENT, "message exceeds the client's maximum"
            )
        sent = self._outbox.send(data, qos, (message, qos))
        if sent:
            self._protocol.written(message)
        return sent is not False

    # -- the protocol handlers' API ----------------------------------------------------------

    async def accept(
        self,
        *,
        client_id: str,
        keep_alive: int,
        receive_maximum: int,
        max_packet_size: int | None,
        will: Message | None,
        will_retain: bool = False,
        will_delay: int = 0,
        clean_start: bool = True,
        session_expiry: int = 0,
    ) -> Accepted:
        """CONNECT accepted: take over an older session, resume or delete a stored one.

        A keep-alive of 0 or above ``max_keep_alive`` becomes the maximum (announced as
        Server Keep Alive in MQTT 5; a 3.1.1 client is not told, it is held to it). The
        Session Expiry is granted up to the persistence's maximum, and only when the gateway
        keeps sessions. The handler writes CONNACK right after.
        """
        server_keep_alive: int | None = None
        if keep_alive == 0 or keep_alive > self.settings.max_keep_alive:
            server_keep_alive = self.settings.max_keep_alive
            self._keep_alive = server_keep_alive
        else:
            self._keep_alive = keep_alive
        self._outbox.open_window(receive_maximum)
        self._client_max_packet_size = max_packet_size
        self._will = will
        self._will_retain = will_retain
        self._will_delay = will_delay
        self._on_connected(self)
        persistence = self.sessions
        if persistence is not None:
            self._expiry = min(session_expiry, persistence.max_expiry)
            try:
                self._resumed = await persistence.begin(self, self.identity, clean=clean_start)
            except Exception as exc:  # the store is down: connect, but keep nothing
                self.log(logging.WARNING, "session_store_unavailable", f"no session: {exc}")
                self._expiry = 0
        self._connected = not self._closing
        self.log(
            logging.INFO,
            "mqtt_connected",
            f"MQTT {self.protocol_version} CONNECT accepted (client id {client_id!r}, "
            f"keep-alive {self._keep_alive} s, session expiry {self._expiry} s, "
            f"session present {self._resumed is not None})",
        )
        return Accepted(server_keep_alive, self._resumed is not None, self._expiry)

    def client_id_refusal(self, client_id: str) -> str | None:
        """Why ``client_id`` may not connect with this certificate (:mod:`.rules`)."""
        return rules.client_id_refusal(self.identity, client_id)

    def connect_refusal(self) -> str | None:
        """Why the policy refuses this identity the connect right (:mod:`.rules`)."""
        return rules.connect_refusal(self.policy, self.identity)

    def publish_refusal(self, topic: str, response_topic: str | None) -> tuple[str, str] | None:
        """(code, words) if the policy refuses this publish (:mod:`.rules`), else None."""
        return rules.publish_refusal(self.policy, self.identity, topic, response_topic)

    def route(self, message: Message) -> int:
        """Hand a message this client published to the broker; how many subscribers matched."""
        return self._broker.publish(message, origin=self)

    def outbound_in_flight(self, packet_id: int) -> bool:
        """Whether an outgoing QoS 1/2 message with this identifier awaits its acknowledgement."""
        return self._outbox.in_flight(packet_id)

    def acknowledge(self, packet_id: int) -> None:
        """PUBACK or PUBCOMP (or a refusing PUBREC): the identifier is free again."""
        self._outbox.acknowledge(packet_id)

    def pubrel(self, packet_id: int) -> None:
        """PUBREC for an outgoing QoS 2 message: send PUBREL (owed again after a reconnect)."""
        self._outbox.pubrel_sent(packet_id)
        self._outbox.write(bytes([0x62, 0x02]) + packet_id.to_bytes(2, "big"))

    def write(self, data: bytes) -> None:
        """Write bytes to the client (nothing once the transport is closing)."""
        self._outbox.write(data)

    def end(self, *, publish_will: bool | None = None) -> None:
        """The client said goodbye (DISCONNECT): stop reading; optionally suppress the Will."""
        if publish_will is not None:
            self._publish_will = publish_will
        self._closing = True

    def log(self, level: int, code: str, message: str) -> None:
        """One gateway event for this session."""
        log_event(level, code, message, peer=self.peer, identity=self.identity.name)

    # -- internals ---------------------------------------------------------------------------

    def _abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.transport.abort()

    async def _handshake(self, connect_deadline: float) -> bool:
        try:
            async with asyncio.timeout_at(connect_deadline):
                frame = await self._stream.read_frame()
        except TimeoutError:
            self.counters.hit(
                LimitCode.CONNECT_DEADLINE,
                "no CONNECT before the connect deadline",
                peer=self.peer,
                identity=self.identity.name,
            )
            return False
        except PacketTooLargeError as exc:
            # The version is not known yet: answer in MQTT 5, the protocol of the port.
            self.log(logging.WARNING, exc.code, exc.message)
            self.write(mqtt5_connack(ConnAckReasonCode.PACKET_TOO_LARGE, "packet too large"))
            return False
        except MalformedPacketError as exc:
            self.log(logging.WARNING, exc.code, exc.message)
            self.write(mqtt5_connack(ConnAckReasonCode.MALFORMED_PACKET, "malformed packet"))
            return False
        if frame is None:
            self.log(logging.INFO, "connection_closed", "closed before CONNECT")
            return False
        announced = connect_protocol(frame)
        if announced is None:
            if frame[0] == CONNECT_HEADER:
                # A CONNECT too short to name its protocol: malformed, said in MQTT 5.
                self.log(logging.WARNING, "mqtt_malformed_packet", "CONNECT cut short")
                self.write(mqtt5_connack(ConnAckReasonCode.MALFORMED_PACKET, "malformed packet"))
            else:
                self.log(logging.WARNING, "mqtt_protocol_error", "the first packet is not CONNECT")
            return False
        name, level = announced
        if level == MQTT5_LEVEL:
            self._protocol = Mqtt5Handler(self)
        elif level == MQTT311_LEVEL and name == MQTT311_NAME:
            self._protocol = Mqtt311Handler(self)
        else:
            self.log(
                logging.WARNING,
                "mqtt_protocol_version_unsupported",
                f"CONNECT for protocol {name!r} level {level}: answered 3.1.1 CONNACK 0x01 "
                "(this gateway speaks MQTT 3.1.1 and 5)",
            )
            self.write(encode311(ConnAck(ConnAckCode.UNACCEPTABLE_PROTOCOL_VERSION)))
            return False
        try:
            packet = self._protocol.decode(frame)
        except MalformedPacketError as exc:
            self.log(logging.WARNING, exc.code, exc.message)
            self._protocol.malformed_connect()
            return False
        if not await self._protocol.connect(packet):
            return False
        await self._resume()
        return True

    async def _serve(self) -> None:
        protocol = self._protocol
        assert protocol is not None  # set by _handshake
        while not self._closing:
            try:
                # A frame already read needs no keep-alive timer (a timer per packet is most
                # of a small PUBLISH's cost in the loop): the timer covers every wait.
                frame = self._stream.buffered_frame()
                pending = None
                if frame is None:
                    async with asyncio.timeout(self._keep_alive * KEEP_ALIVE_GRACE):
                        frame = await self._stream.read_frame()
                if frame is not None and not self._closing:
                    pending = protocol.handle(protocol.decode(frame))
                stuck = self._outbox.buffered() > self.settings.max_packet_size
                if pending is not None or stuck:
                    async with asyncio.timeout(self._keep_alive * KEEP_ALIVE_GRACE):
                        if pending is not None:
                            # A retained message is being stored: its acknowledgement (and
                            # the next packet) waits, so PUBACKs stay in order.
                            await pending
                        if stuck:
                            # Stop reading while the client does not read its acknowledgements.
                            await self._outbox.drain()
                if self.over_quota:
                    # Told 0x97 and asking for more: read its next packet later, so a client
                    # that floods SUBSCRIBE gets a bounded share of the loop (not counted as
                    # keep-alive silence).
                    self.over_quota = False
                    await asyncio.sleep(self.settings.quota_backoff)
            except TimeoutError:
                self.log(logging.INFO, "mqtt_keep_alive_timeout", "silent beyond 1.5 x keep-alive")
                self.disconnect(DisconnectReasonCode.KEEP_ALIVE_TIMEOUT, "keep alive timeout")
                return
            except PacketTooLargeError as exc:
                self.log(logging.WARNING, exc.code, exc.message)
                self.disconnect(DisconnectReasonCode.PACKET_TOO_LARGE, "packet too large")
                return
            except MalformedPacketError as exc:
                self.log(logging.WARNING, exc.code, exc.message)
                self.disconnect(DisconnectReasonCode.MALFORMED_PACKET, "malformed packet")
                return
            except READ_ERRORS:
                frame = None
            if frame is None:
                if not self._closing:
                    self.log(logging.INFO, "connection_closed", "closed without DISCONNECT")
                return
