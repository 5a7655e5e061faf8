"""MQTT 5 CONNECT: who may connect, and the Will it leaves (see :mod:`.protocol5`).

Refusals, each with the CONNACK reason the spec names: a client id that is not the
certificate's identity 0x85, enhanced authentication 0x8C (the certificate is the
credential), a retained Will without a retained store 0x9A, a Will topic that is not a topic
name 0x90, a Will (or its Response Topic) outside the policy 0x87.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mqtt5
from mqtt5 import ConnAckReasonCode

from tether.cloud.gateway.broker import Message, attributed_properties
from tether.cloud.gateway.identity import Identity
from tether.cloud.gateway.topics import is_valid_topic_name

if TYPE_CHECKING:
    from tether.cloud.gateway.session import Session


def mqtt5_connack(reason: ConnAckReasonCode, reason_str: str) -> bytes:
    """A refusing MQTT 5 CONNACK."""
    return mqtt5.ConnAckPacket(reason_code=reason, reason_str=reason_str).write()


def connect_refusal(
    session: Session, packet: mqtt5.ConnectPacket
) -> tuple[ConnAckReasonCode, str, str] | None:
    """(CONNACK reason, event code, words) if the CONNECT is refused, else ``None``."""
    text = session.client_id_refusal(packet.client_id)
    if text is not None:
        return ConnAckReasonCode.CLIENT_ID_NOT_VALID, "mqtt_client_id_mismatch", text
    text = session.connect_refusal()
    if text is not None:
        return ConnAckReasonCode.NOT_AUTHORIZED, "connect_not_authorized", text
    if packet.authentication_method is not None:
        return (
            ConnAckReasonCode.BAD_AUTHENTICATION_METHOD,
            "mqtt_auth_method_unsupported",
            "enhanced authentication is not supported; the certificate is the credential",
        )
    will = packet.will
    if will is not None:
        if will.retain and session.retained is None:
            return (
                ConnAckReasonCode.RETAIN_NOT_SUPPORTED,
                "mqtt_retain_unsupported",
                "retained Will messages are not supported",
            )
        if not is_valid_topic_name(will.topic):
            return (
                ConnAckReasonCode.TOPIC_NAME_INVALID,
                "mqtt_topic_name_invalid",
                f"Will topic {will.topic!r} is not a valid topic name",
            )
        refusal = session.publish_refusal(will.topic, will.response_topic)
        if refusal is not None:
            return (ConnAckReasonCode.NOT_AUTHORIZED, refusal[0], f"Will: {refusal[1]}")
    return None


def will_message(identity: Identity, will: mqtt5.Will | None) -> Message | None:
    """The Will as the message it becomes, attributed to the certificate."""
    if will is None:
        return None
    return Message(
        topic=will.topic,
        payload=will.payload or b"",
        qos=int(will.qos),
        sender=identity,
        user_properties=attributed_properties(identity, will.user_properties),
        payload_format_indicator=will.payload_format_indicator,
        message_expiry_interval=will.message_expiry_interval,
        content_type=will.content_type,
        response_topic=will.response_topic,
        correlation_data=will.correlation_data,
    )
