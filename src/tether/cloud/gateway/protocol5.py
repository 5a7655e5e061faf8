"""MQTT 5 packet handling for a session: the ``mqtt5`` codec, strict to the spec.

What it supports, and what it refuses (each with the reason code the spec names):

- CONNECT: client id = identity name (else CONNACK 0x85); enhanced authentication refused
  (CONNACK 0x8C); a requested Session Expiry is answered with 0 (no session outlives its
  connection yet); a Will is checked against the policy (CONNACK 0x87); a retained Will
  needs a retained store (else CONNACK 0x9A, Retain Available 0).
- PUBLISH at QoS 0, 1 (PUBACK) and 2 (PUBREC / PUBREL / PUBCOMP, exactly once). A topic name
  with a wildcard -> DISCONNECT 0x90 [MQTT-3.3.2-2]; QoS > 0 with packet identifier 0 ->
  0x82 [MQTT-2.2.1-3]; retain without a retained store -> 0x9A (with one: stored, PUBACK
  0x97 if the sender's retained bounds refuse it); a client PUBLISH with subscription
  identifiers -> 0x82.
  An alias beyond the Topic Alias Maximum in CONNACK -> 0x94 [MQTT-3.3.2-9] (alias 0 the
  codec refuses: 0x81); an unknown alias with an empty topic -> 0x82. A publish the policy refuses,
  or whose Response Topic the sender may not name, gets PUBACK / PUBREC 0x87; at QoS 0,
  which has no acknowledgement, DISCONNECT 0x87 so the client sees the refusal.
- SUBSCRIBE: no filter -> 0x82 [MQTT-3.8.3-2]; reserved bits in subscription options ->
  0x81 [MQTT-3.8.3-5] (read from the raw frame: the codec ignores them); a subscription
  identifier is kept and sent with every message the filter matches; per-filter codes in
  :mod:`tether.cloud.gateway.subscriptions`.
- AUTH -> DISCONNECT 0x82 (no Authentication Method was agreed: MQTT 5 section 4.12).
- Request Problem Information 0 -> no Reason String in PUBACK, PUBREC, PUBREL, PUBCOMP or
  SUBACK [MQTT-3.1.2-29] (CONNACK and DISCONNECT may still carry one).
- Topic aliases both ways, as :mod:`tether.cloud.gateway.aliases` describes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import mqtt5
from mqtt5 import ConnAckReasonCode, DisconnectReasonCode, QoS

from tether.cloud.gateway.aliases import AliasError, TopicAliases
from tether.cloud.gateway.broker import Message, attributed_properties
from tether.cloud.gateway.framing import decode, subscribe_options_reserved
from tether.cloud.gateway.protocol import ProtocolHandler
from tether.cloud.gateway.protocol5_connect import connect_refusal, mqtt5_connack, will_message
from tether.cloud.gateway.reserved import RESERVED_PREFIX
from tether.cloud.gateway.stores import StoreOutcome
from tether.cloud.gateway.subscriptions import SubscribeRequest
from tether.cloud.gateway.topics import is_valid_topic_name

if TYPE_CHECKING:
    from tether.cloud.gateway.session import Session

CLIENT_RECEIVE_MAXIMUM = 65_535  # what a CONNECT without Receive Maximum means (spec 3.1.2.11)
PLACEHOLDER_PACKET_ID = 1  # replaced by OutboundFlow when the message is written
AUTH_TYPE = 15
# PUBACK and PUBREC share these reason codes (MQTT 5 sections 3.4.2.1, 3.5.2.1).
SUCCESS = 0x00
NO_MATCHING_SUBSCRIBERS = 0x10
NOT_AUTHORIZED = 0x87
QUOTA_EXCEEDED = 0x97
PUBACK_HEADER, PUBREC_HEADER = 0x40, 0x50  # fixed header byte 1 (MQTT 5 3.4.1, 3.5.1)
QOS_LEVELS = (QoS.AT_MOST_ONCE, QoS.AT_LEAST_ONCE, QoS.EXACTLY_ONCE)  # QoS(n) without a call


class Mqtt5Handler(ProtocolHandler):
    """MQTT 5 for one session (see the module docstring)."""

    version = "5"

    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self._problem_info = True
        self._aliases = TopicAliases(session.settings.topic_alias_maximum)
        self._frame = b""

    def decode(self, frame: bytes) -> object:
        """The ``mqtt5`` codec, behind ``framing.decode``'s one error."""
        self._frame = frame  # for checks the codec does not make (subscription options)
        if frame[0] >> 4 == AUTH_TYPE:
            # No Authentication Method was agreed, so any AUTH is a Protocol Error (0x82),
            # whether or not the codec can read it (it refuses the legal 2-byte form).
            return mqtt5.AuthPacket()
        return decode(frame)

    def malformed_connect(self) -> None:
        """CONNACK 0x81."""
        self.session.write(mqtt5_connack(ConnAckReasonCode.MALFORMED_PACKET, "malformed packet"))

    def disconnect_packet(self, reason: DisconnectReasonCode, text: str | None) -> bytes | None:
        """A DISCONNECT with the reason (and its words unless the client asked for none)."""
        return mqtt5.DisconnectPacket(reason_code=reason, reason_str=text).write()

    # -- CONNECT -------------------------------------------------------------------------------

    async def connect(self, packet: object) -> bool:
        """Check and accept a CONNECT (see the module docstring); writes CONNACK."""
        session = self.session
        if not isinstance(packet, mqtt5.ConnectPacket):
            session.log(logging.WARNING, "mqtt_protocol_error", "the first packet is not CONNECT")
            return False
        refusal = connect_refusal(session, packet)
        if refusal is not None:
            reason, code, text = refusal
            session.log(logging.WARNING, code, f"CONNECT refused with 0x{int(reason):02x}: {text}")
            session.write(mqtt5_connack(reason, text))
            return False
        self._problem_info = packet.request_problem_info is not False
        self._aliases.allow_outbound(packet.topic_alias_max or 0)
        settings = session.settings
        will = packet.will
        requested = packet.session_expiry_interval or 0
        accepted = await session.accept(
            client_id=packet.client_id,
            keep_alive=packet.keep_alive,
            receive_maximum=packet.receive_max or CLIENT_RECEIVE_MAXIMUM,
            max_packet_size=packet.max_packet_size,
            will=will_message(session.identity, will),
            will_retain=will is not None and will.retain,
            will_delay=(will.will_delay_interval or 0) if will is not None else 0,
            clean_start=packet.clean_start,
            session_expiry=requested,
        )
        if not session.connected:
            return False  # dropped while the stored session was read
        session.write(
            mqtt5.ConnAckPacket(
                session_present=accepted.session_present,
                reason_code=ConnAckReasonCode.SUCCESS,
                # Say so when the expiry granted is not the one asked for (spec 3.2.2.3.2).
                session_expiry_interval=accepted.session_expiry
                if accepted.session_expiry != requested
                else None,
                server_keep_alive=accepted.server_keep_alive,
                receive_max=settings.receive_maximum,
                topic_alias_max=settings.topic_alias_maximum,
                max_qos=QoS.EXACTLY_ONCE,
                retain_available=session.retained is not None,
                max_packet_size=settings.max_packet_size,
                wildcard_subscription_available=True,
                subscription_id_available=True,
                shared_subscription_available=True,
            ).write()
        )
        return True

    # -- packets after CONNECT -----------------------------------------------------------------

    def handle(self, packet: object) -> Awaitable[None] | None:
        """One packet after CONNECT (an awaitable while a retained message is stored)."""
        session = self.session
        if isinstance(packet, mqtt5.PublishPacket):
            return self._on_publish(packet)
        elif isinstance(packet, mqtt5.PubAckPacket | mqtt5.PubCompPacket):
            session.acknowledge(packet.packet_id)
        elif isinstance(packet, mqtt5.PubRecPacket):
            self._on_pubrec(packet)
        elif isinstance(packet, mqtt5.PubRelPacket):
            found = session.exactly_once.release(packet.packet_id)
            code = (
                mqtt5.PubCompReasonCode.SUCCESS
                if found
                else mqtt5.PubCompReasonCode.PACKET_ID_NOT_FOUND
            )
            session.write(mqtt5.PubCompPacket(packet.packet_id, reason_code=code).write())
        elif isinstance(packet, mqtt5.SubscribePacket):
            self._on_subscribe(packet)
        elif isinstance(packet, mqtt5.UnsubscribePacket):
            codes = [
                mqtt5.UnsubAckReasonCode.SUCCESS
                if session.subscriptions.unsubscribe(pattern)
                else mqtt5.UnsubAckReasonCode.NO_SUBSCRIPTION_EXISTED
                for pattern in packet.patterns
            ]
            session.write(mqtt5.UnsubAckPacket(packet.packet_id, codes).write())
        elif isinstance(packet, mqtt5.PingReqPacket):
            session.write(mqtt5.PingRespPacket().write())
        elif isinstance(packet, mqtt5.DisconnectPacket):
            normal = packet.reason_code == DisconnectReasonCode.NORMAL_DISCONNECTION
            session.log(
                logging.INFO,
                "mqtt_disconnected",
                f"client DISCONNECT 0x{int(packet.reason_code):02x}",
            )
            session.end(publish_will=False if normal else None)
        elif isinstance(packet, mqtt5.AuthPacket):
            self._refuse(
                DisconnectReasonCode.PROTOCOL_ERROR,
                "mqtt_protocol_error",
                "AUTH without an agreed Authentication Method (MQTT 5 section 4.12)",
            )
        else:
            self._refuse(
                DisconnectReasonCode.PROTOCOL_ERROR,
                "mqtt_protocol_error",
                f"unexpected {type(packet).__name__} from a client",
            )

    def _refuse(self, reason: DisconnectReasonCode, code: str, text: str) -> None:
        self.session.log(logging.WARNING, code, text)
        self.session.disconnect(reason, text)

    def _reason(self, text: str) -> str | None:
        """A Reason String, unless the client asked for none [MQTT-3.1.2-29]."""
        return text if self._problem_info else None

    def _inbound_topic(self, packet: mqtt5.PublishPacket) -> str | None:
        """The PUBLISH's topic after its alias; ``None`` once the session was refused."""
        try:
            return self._aliases.resolve(packet.topic, packet.topic_alias)
        except AliasError as exc:
            self._refuse(exc.reason, exc.code, exc.text)
            return None

    def _on_publish(self, packet: mqtt5.PublishPacket) -> Awaitable[None] | None:
        session = self.session
        # Each attribute of a codec packet is a call into the codec: read each once.
        qos, retain = packet.qos, packet.retain
        if retain and session.retained is None:
            self._refuse(
                DisconnectReasonCode.RETAIN_NOT_SUPPORTED,
                "mqtt_retain_unsupported",
                "PUBLISH with retain (Retain Available is 0)",
            )
            return None
        if qos != QoS.AT_MOST_ONCE and not packet.packet_id:
            self._refuse(
                DisconnectReasonCode.PROTOCOL_ERROR,
                "mqtt_protocol_error",
                f"QoS {int(qos)} PUBLISH with packet identifier 0 [MQTT-2.2.1-3]",
            )
            return None
        if packet.subscription_ids:
            self._refuse(
                DisconnectReasonCode.PROTOCOL_ERROR,
                "mqtt_protocol_error",
                "a client PUBLISH must not carry subscription identifiers",
            )
            return None
        topic = self._inbound_topic(packet)
        if topic is None:
            return None
        if not is_valid_topic_name(topic):
            self._refuse(
                DisconnectReasonCode.TOPIC_NAME_INVALID,
                "mqtt_topic_name_invalid",
                f"PUBLISH topic {topic!r} is not a valid topic name [MQTT-3.3.2-2]",
            )
            return None
        if topic.startswith(RESERVED_PREFIX):
            self._on_reserved(packet, topic)
            return None
        refusal = session.publish_refusal(topic, packet.response_topic)
        if refusal is not None:
            code, text = refusal
            session.log(logging.WARNING, code, f"PUBLISH refused by policy: {text}")
            if qos == QoS.AT_MOST_ONCE:
                session.disconnect(DisconnectReasonCode.NOT_AUTHORIZED, code)
            else:
                session.write(self._ack(packet, NOT_AUTHORIZED, self._reason(code)))
            return None
        first = True
        if qos == QoS.EXACTLY_ONCE:
            new = session.exactly_once.receive(packet.packet_id)
            if new is None:
                self._refuse(
                    DisconnectReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
                    "mqtt_receive_maximum_exceeded",
                    f"more than {session.settings.receive_maximum} QoS 2 messages unreleased",
                )
                return None
            first = new
        message = self._message(packet, topic)
        matched = session.route(message) if first else 1  # a resend was routed already
        reason = SUCCESS if matched else NO_MATCHING_SUBSCRIBERS
        if retain and first:
            return self._retain_then_ack(packet, message, reason)
        if qos != QoS.AT_MOST_ONCE:
            session.write(self._ack(packet, reason))
        return None

    def _on_reserved(self, packet: mqtt5.PublishPacket, topic: str) -> None:
        """A ``$tether/...`` request for the cloud itself (gateway/reserved.py): not routed."""
        session = self.session
        handler = session.reserved
        accepted = handler is not None and handler.handle(session, self._message(packet, topic))
        if not accepted:
            session.log(logging.WARNING, "reserved_topic_refused", f"{topic!r} refused")
        if packet.qos != QoS.AT_MOST_ONCE:
            session.write(self._ack(packet, SUCCESS if accepted else NOT_AUTHORIZED))
        elif not accepted:
            session.disconnect(DisconnectReasonCode.NOT_AUTHORIZED, "reserved_topic_refused")

    async def _retain_then_ack(
        self, packet: mqtt5.PublishPacket, message: Message, reason: int
    ) -> None:
        """Store the retained message, then acknowledge: 0x97 if its bounds refused it."""
        retained = self.session.retained
        assert retained is not None  # checked in _on_publish
        outcome = await retained.store(message)
        if outcome in (StoreOutcome.OVER_COUNT, StoreOutcome.OVER_BYTES):
            reason = QUOTA_EXCEEDED
        if packet.qos != QoS.AT_MOST_ONCE:
            text = "retained message refused: quota" if reason == QUOTA_EXCEEDED else None
            self.session.write(self._ack(packet, reason, self._reason(text) if text else None))

    def _ack(self, packet: mqtt5.PublishPacket, reason: int, text: str | None = None) -> bytes:
        """PUBACK (QoS 1) or PUBREC (QoS 2) with ``reason`` (the codes are the same)."""
        qos = packet.qos
        if reason == SUCCESS and text is None:
            # The codec's own bytes for Success without properties (the reason code may be
            # left out, MQTT 5 3.4.2.1), without building a packet object per message.
            packet_id = packet.packet_id
            kind = PUBACK_HEADER if qos == QoS.AT_LEAST_ONCE else PUBREC_HEADER
            return bytes((kind, 2, packet_id >> 8, packet_id & 0xFF))
        if qos == QoS.AT_LEAST_ONCE:
            return mqtt5.PubAckPacket(
                packet.packet_id, reason_code=mqtt5.PubAckReasonCode(reason), reason_str=text
            ).write()
        return mqtt5.PubRecPacket(
            packet.packet_id, reason_code=mqtt5.PubRecReasonCode(reason), reason_str=text
        ).write()

    def _message(self, packet: mqtt5.PublishPacket, topic: str) -> Message:
        identity = self.session.identity
        return Message(
            topic=topic,
            payload=packet.payload,
            qos=int(packet.qos),
            sender=identity,
            user_properties=attributed_properties(identity, packet.user_properties),
            payload_format_indicator=packet.payload_format_indicator,
            message_expiry_interval=packet.message_expiry_interval,
            content_type=packet.content_type,
            response_topic=packet.response_topic,
            correlation_data=packet.correlation_data,
            published_retained=packet.retain,
        )

    def _on_pubrec(self, packet: mqtt5.PubRecPacket) -> None:
        session = self.session
        if not session.outbound_in_flight(packet.packet_id):
            session.write(
                mqtt5.PubRelPacket(
                    packet.packet_id, reason_code=mqtt5.PubRelReasonCode.PACKET_ID_NOT_FOUND
                ).write()
            )
            return
        if int(packet.reason_code) >= 0x80:
            session.acknowledge(packet.packet_id)  # the flow ends here (MQTT 5 4.3.3)
            return
        session.pubrel(packet.packet_id)

    def _on_subscribe(self, packet: mqtt5.SubscribePacket) -> None:
        session = self.session
        if not packet.topic_filters:
            self._refuse(
                DisconnectReasonCode.PROTOCOL_ERROR,
                "mqtt_protocol_error",
                "SUBSCRIBE without a topic filter [MQTT-3.8.3-2]",
            )
            return
        if subscribe_options_reserved(self._frame):
            self._refuse(
                DisconnectReasonCode.MALFORMED_PACKET,
                "mqtt_malformed_packet",
                "SUBSCRIBE with reserved subscription option bits set [MQTT-3.8.3-5]",
            )
            return
        requests = [
            SubscribeRequest(
                f.pattern,
                int(f.max_qos),
                no_local=f.no_local,
                retain_handling=int(f.retain_handling),
                retain_as_published=f.retain_as_published,
            )
            for f in packet.topic_filters
        ]
        codes = session.subscriptions.subscribe(requests, packet.subscription_id)
        session.write(mqtt5.SubAckPacket(packet.packet_id, codes).write())
        session.send_retained()
        session.over_quota = mqtt5.SubAckReasonCode.QUOTA_EXCEEDED in codes

    # -- outgoing ------------------------------------------------------------------------------

    def encode_publish(self, message: Message, qos: int) -> bytes:
        """The PUBLISH for ``message``, with subscription identifiers and a topic alias."""
        topic, alias = self._aliases.outbound(message.topic)
        return mqtt5.PublishPacket(
            topic,
            message.payload,
            qos=QOS_LEVELS[qos],
            retain=message.retain,
            packet_id=PLACEHOLDER_PACKET_ID if qos >= 1 else None,
            payload_format_indicator=message.payload_format_indicator,
            message_expiry_interval=message.message_expiry_interval,
            content_type=message.content_type,
            response_topic=message.response_topic,
            correlation_data=message.correlation_data,
            subscription_ids=self.session.subscriptions.subscription_ids(message.topic),
            topic_alias=alias,
            user_properties=list(message.user_properties),
        ).write()

    def written(self, message: Message) -> None:
        """The alias of a written PUBLISH is known to the client from now on."""
        self._aliases.written(message.topic)
