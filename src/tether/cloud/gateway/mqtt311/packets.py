"""MQTT 3.1.1 packets as frozen value objects (OASIS MQTT 3.1.1, section 3).

Only what 3.1.1 carries: no properties, no reason codes beyond CONNACK's return code and
SUBACK's granted QoS / 0x80. The codec (:mod:`tether.cloud.gateway.mqtt311.codec`) turns
these into bytes and back; the session never builds a frame by hand.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

PROTOCOL_NAME = "MQTT"
PROTOCOL_LEVEL = 4  # MQTT 3.1.1 (spec 3.1.2.2)


class PacketType(enum.IntEnum):
    """The control packet type, the high nibble of the first byte (spec 2.2.1)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14


class ConnAckCode(enum.IntEnum):
    """CONNACK return codes (spec 3.2.2.3)."""

    ACCEPTED = 0x00
    UNACCEPTABLE_PROTOCOL_VERSION = 0x01
    IDENTIFIER_REJECTED = 0x02
    SERVER_UNAVAILABLE = 0x03
    BAD_USERNAME_OR_PASSWORD = 0x04
    NOT_AUTHORIZED = 0x05


SUBACK_FAILURE = 0x80  # the one refusal a 3.1.1 SUBACK can say (spec 3.9.3)


@dataclass(frozen=True, slots=True)
class Will:
    """The Will of a CONNECT: published by the server when the connection ends abnormally."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Connect:
    """CONNECT (spec 3.1). ``client_id`` may be empty only with ``clean_session``."""

    client_id: str
    clean_session: bool = True
    keep_alive: int = 60
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None


@dataclass(frozen=True, slots=True)
class ConnAck:
    """CONNACK (spec 3.2)."""

    return_code: ConnAckCode = ConnAckCode.ACCEPTED
    session_present: bool = False


@dataclass(frozen=True, slots=True)
class Publish:
    """PUBLISH (spec 3.3). ``packet_id`` is set exactly when ``qos`` > 0."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None


@dataclass(frozen=True, slots=True)
class PubAck:
    """PUBACK (spec 3.4): QoS 1 acknowledged."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class PubRec:
    """PUBREC (spec 3.5): QoS 2, part 1 received."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class PubRel:
    """PUBREL (spec 3.6): QoS 2, part 2 released."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class PubComp:
    """PUBCOMP (spec 3.7): QoS 2, part 3 complete."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    """SUBSCRIBE (spec 3.8): at least one (topic filter, requested QoS) pair."""

    packet_id: int
    filters: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class SubAck:
    """SUBACK (spec 3.9): per filter, the granted QoS or ``SUBACK_FAILURE``."""

    packet_id: int
    return_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """UNSUBSCRIBE (spec 3.10): at least one topic filter."""

    packet_id: int
    filters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UnsubAck:
    """UNSUBACK (spec 3.11)."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class PingReq:
    """PINGREQ (spec 3.12)."""


@dataclass(frozen=True, slots=True)
class PingResp:
    """PINGRESP (spec 3.13)."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """DISCONNECT (spec 3.14): client to server only; the server just closes."""


Packet = (
    Connect
    | ConnAck
    | Publish
    | PubAck
    | PubRec
    | PubRel
    | PubComp
    | Subscribe
    | SubAck
    | Unsubscribe
    | UnsubAck
    | PingReq
    | PingResp
    | Disconnect
)
