"""MQTT 3.1.1 packet handling for a session: our codec, the same identity rules as MQTT 5.

3.1.1 cannot say why (no reason codes, no server DISCONNECT), so where MQTT 5 answers a
refusal with a code, 3.1.1 closes the connection as its spec requires ("the Server MUST
close the Network Connection" for any protocol violation, section 4.8) and the gateway logs
the reason with the same event code:

- CONNECT: client id = identity name, else CONNACK 0x02 Identifier rejected; a Will outside
  the policy, or retained without a retained store, gets CONNACK 0x05 Not authorized. User
  name and password are ignored: the certificate is the credential. Clean Session 0 keeps
  the session for ``default_expiry`` (one hour) when the gateway keeps sessions
  (:mod:`.persistence`); without, it is accepted with Session Present 0 and logged.
  Keep-alive 0 or above ``max_keep_alive`` is held to ``max_keep_alive`` (3.1.1 cannot
  announce it).
- PUBLISH at QoS 0, 1 (PUBACK) and 2 (PUBREC / PUBREL / PUBCOMP, exactly once, the same
  bookkeeping as MQTT 5). A topic with a wildcard, a publish the policy refuses, and a
  retained publish without a retained store close the connection (3.1.1 has no negative
  acknowledgement); with a store, a retained publish is stored before it is acknowledged.
- SUBSCRIBE: per filter the granted QoS, or 0x80 for every refusal MQTT 5 would name
  (invalid, shared, policy, quota). UNSUBSCRIBE, PINGREQ, DISCONNECT (no Will then).
- Outgoing: a 3.1.1 client announces no Receive Maximum, so at most ``max_inflight_messages``
  QoS 1/2 messages are unacknowledged (the rest wait, bounded, as for MQTT 5). Properties
  are not delivered; the sender is learned from a ``$sender/...`` subscription
  (:mod:`tether.cloud.gateway.senders`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from mqtt5 import DisconnectReasonCode

from tether.cloud.gateway.broker import Message, attributed_properties
from tether.cloud.gateway.mqtt311 import decode, encode
from tether.cloud.gateway.mqtt311.packets import (
    SUBACK_FAILURE,
    ConnAck,
    ConnAckCode,
    Connect,
    Disconnect,
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
)
from tether.cloud.gateway.protocol import ProtocolHandler
from tether.cloud.gateway.reserved import RESERVED_PREFIX
from tether.cloud.gateway.subscriptions import SubscribeRequest
from tether.cloud.gateway.topics import is_valid_topic_name

if TYPE_CHECKING:
    pass

PLACEHOLDER_PACKET_ID = 1  # replaced by OutboundFlow when the message is written


class Mqtt311Handler(ProtocolHandler):
    """MQTT 3.1.1 for one session (see the module docstring)."""

    version = "3.1.1"

    def decode(self, frame: bytes) -> object:
        """Our 3.1.1 codec; ``Mqtt311MalformedError`` for bytes it cannot read."""
        return decode(frame)

    def malformed_connect(self) -> None:
        """3.1.1 answers a malformed CONNECT by closing, without CONNACK (spec 3.1.4)."""

    def disconnect_packet(self, reason: DisconnectReasonCode, text: str | None) -> bytes | None:
        """Nothing: a 3.1.1 server closes the connection without a packet."""
        return None

    async def connect(self, packet: object) -> bool:
        """Check and accept a CONNECT (see the module docstring); writes CONNACK."""
        session = self.session
        if not isinstance(packet, Connect):
            session.log(logging.WARNING, "mqtt_protocol_error", "the first packet is not CONNECT")
            return False
        refused = self._connect_refusal(packet)
        if refused is not None:
            return_code, code, text = refused
            session.log(
                logging.WARNING,
                code,
                f"MQTT 3.1.1 CONNECT refused with 0x{int(return_code):02x}: {text}",
            )
            session.write(encode(ConnAck(return_code)))
            return False
        persistence = session.sessions
        expiry = 0
        if not packet.clean_session:
            if persistence is not None:
                expiry = persistence.default_expiry
            else:
                session.log(
                    logging.WARNING,
                    "mqtt_persistent_session_unsupported",
                    "Clean Session 0: accepted with Session Present 0; nothing is kept after "
                    "this connection",
                )
        will = packet.will
        identity = session.identity
        accepted = await session.accept(
            client_id=packet.client_id,
            keep_alive=packet.keep_alive,
            receive_maximum=session.settings.max_inflight_messages,
            max_packet_size=None,
            will=None
            if will is None
            else Message(
                topic=will.topic,
                payload=will.payload,
                qos=will.qos,
                sender=identity,
                user_properties=attributed_properties(identity, []),
            ),
            will_retain=will is not None and will.retain,
            clean_start=packet.clean_session,
            session_expiry=expiry,
        )
        if not session.connected:
            return False
        present = accepted.session_present
        session.write(encode(ConnAck(ConnAckCode.ACCEPTED, session_present=present)))
        return True

    def _connect_refusal(self, packet: Connect) -> tuple[ConnAckCode, str, str] | None:
        session = self.session
        text = session.client_id_refusal(packet.client_id)
        if text is not None:
            return ConnAckCode.IDENTIFIER_REJECTED, "mqtt_client_id_mismatch", text
        text = session.connect_refusal()
        if text is not None:
            return ConnAckCode.NOT_AUTHORIZED, "connect_not_authorized", text
        will = packet.will
        if will is not None:
            if will.retain and session.retained is None:
                return (
                    ConnAckCode.NOT_AUTHORIZED,
                    "mqtt_retain_unsupported",
                    "retained Will messages are not supported",
                )
            if not is_valid_topic_name(will.topic):
                return (
                    ConnAckCode.NOT_AUTHORIZED,
                    "mqtt_topic_name_invalid",
                    f"Will topic {will.topic!r} is not a valid topic name",
                )
            refusal = session.publish_refusal(will.topic, None)
            if refusal is not None:
                return ConnAckCode.NOT_AUTHORIZED, refusal[0], f"Will: {refusal[1]}"
        return None

    def _close(self, code: str, text: str) -> None:
        """A 3.1.1 protocol violation or refusal: log why and close (spec 4.8)."""
        self.session.log(logging.WARNING, code, f"MQTT 3.1.1: {text}; connection closed")
        self.session.disconnect(DisconnectReasonCode.PROTOCOL_ERROR, text)

    def handle(self, packet: object) -> Awaitable[None] | None:
        """One packet after CONNECT (an awaitable while a retained message is stored)."""
        session = self.session
        match packet:
            case Publish():
                return self._on_publish(packet)
            case PubAck() | PubComp():
                session.acknowledge(packet.packet_id)
            case PubRec():
                if session.outbound_in_flight(packet.packet_id):
                    session.pubrel(packet.packet_id)
                else:
                    self._close("mqtt_protocol_error", f"PUBREC for unknown id {packet.packet_id}")
            case PubRel():
                # PUBCOMP even for an unknown identifier: the client resends PUBREL after a
                # lost PUBCOMP, and 3.1.1 has no "not found" to say (spec 4.3.3).
                session.exactly_once.release(packet.packet_id)
                session.write(encode(PubComp(packet.packet_id)))
            case Subscribe():
                requests = [SubscribeRequest(pattern, qos) for pattern, qos in packet.filters]
                codes = session.subscriptions.subscribe(requests)
                returned = tuple(int(c) if int(c) < 0x80 else SUBACK_FAILURE for c in codes)
                session.write(encode(SubAck(packet.packet_id, returned)))
                session.over_quota = 0x97 in (int(c) for c in codes)
                session.send_retained()
            case Unsubscribe():
                for pattern in packet.filters:
                    session.subscriptions.unsubscribe(pattern)
                session.write(encode(UnsubAck(packet.packet_id)))
            case PingReq():
                session.write(encode(PingResp()))
            case Disconnect():
                session.log(logging.INFO, "mqtt_disconnected", "client DISCONNECT (3.1.1)")
                session.end(publish_will=False)  # spec 3.14.4: discard the Will
            case _:
                self._close("mqtt_protocol_error", f"unexpected {type(packet).__name__}")

    def _on_publish(self, packet: Publish) -> Awaitable[None] | None:
        session = self.session
        if not is_valid_topic_name(packet.topic):
            self._close("mqtt_topic_name_invalid", f"PUBLISH topic {packet.topic!r} is invalid")
            return None
        if packet.retain and session.retained is None:
            self._close("mqtt_retain_unsupported", "PUBLISH with retain is not supported")
            return None
        if packet.topic.startswith(RESERVED_PREFIX):
            # Enrollment over MQTT answers on the MQTT 5 Response Topic; 3.1.1 has none.
            self._close(
                "reserved_topic_refused",
                f"{packet.topic!r} needs MQTT 5 (Response Topic); a 3.1.1 device enrolls over EST",
            )
            return None
        refusal = session.publish_refusal(packet.topic, None)
        if refusal is not None:
            self._close(refusal[0], f"PUBLISH refused by policy: {refusal[1]}")
            return None
        message = Message(
            topic=packet.topic,
            payload=packet.payload,
            qos=packet.qos,
            sender=session.identity,
            user_properties=attributed_properties(session.identity, []),
            published_retained=packet.retain,
        )
        packet_id = packet.packet_id
        first: bool | None = True
        if packet.qos == 2 and packet_id is not None:
            first = session.exactly_once.receive(packet_id)
            if first is None:
                self._close(
                    "mqtt_receive_maximum_exceeded",
                    f"more than {session.settings.receive_maximum} QoS 2 messages unreleased",
                )
                return None
        if first:
            session.route(message)
        ack = None
        if packet_id is not None:
            ack = encode(PubAck(packet_id) if packet.qos == 1 else PubRec(packet_id))
        if packet.retain and first:
            return self._retain_then_ack(message, ack)
        if ack is not None:
            session.write(ack)
        return None

    async def _retain_then_ack(self, message: Message, ack: bytes | None) -> None:
        """Store the retained message, then acknowledge (3.1.1 cannot say "over quota": the
        store logs it, and the message still reached the live subscribers)."""
        retained = self.session.retained
        assert retained is not None  # checked in _on_publish
        await retained.store(message)
        if ack is not None:
            self.session.write(ack)

    def encode_publish(self, message: Message, qos: int) -> bytes:
        """A 3.1.1 PUBLISH: topic and payload only (3.1.1 has no properties)."""
        return encode(
            Publish(
                message.topic,
                message.payload,
                qos=qos,
                retain=message.retain,
                packet_id=PLACEHOLDER_PACKET_ID if qos else None,
            )
        )
