"""The seam between the session loop and a protocol version: what each version must answer.

A :class:`~tether.cloud.gateway.session.Session` reads frames, keeps the time, holds the
identity, the subscriptions, the outgoing window and the Will; it does not know a byte of
either protocol. A ``ProtocolHandler`` does: it decodes frames, checks and accepts the
CONNECT, handles every later packet (through the session's small API) and encodes what the
session sends. ``Session`` picks one per connection from the CONNECT's protocol
level: 5 is MQTT 5 (:mod:`.protocol5`, the ``mqtt5`` codec), 4 with the name ``MQTT`` is 3.1.1
(:mod:`.protocol311`, our codec); anything else gets the 3.1.1 CONNACK 0x01 "unacceptable
protocol version" (3.1.1 section 3.1.2.2, the one answer every client version can read; an
MQTT 5 CONNACK would be unreadable to an older client).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from mqtt5 import DisconnectReasonCode

if TYPE_CHECKING:
    from tether.cloud.gateway.broker import Message
    from tether.cloud.gateway.session import Session

MQTT5_LEVEL = 5
MQTT311_LEVEL = 4
MQTT311_NAME = "MQTT"


class ProtocolHandler(abc.ABC):
    """One protocol version's half of a session (see the module docstring)."""

    version: str

    def __init__(self, session: Session) -> None:
        self.session = session

    @abc.abstractmethod
    def decode(self, frame: bytes) -> object:
        """One complete frame decoded; ``MalformedPacketError`` (or a subclass) if it is not."""

    @abc.abstractmethod
    def malformed_connect(self) -> None:
        """The first frame did not decode: answer as this version requires (then the close)."""

    @abc.abstractmethod
    async def connect(self, packet: object) -> bool:
        """Check the CONNECT, accept it through ``session.accept`` and write CONNACK.

        ``False`` (after writing the refusal) if it is refused.
        """

    @abc.abstractmethod
    def handle(self, packet: object) -> Awaitable[None] | None:
        """One packet after CONNECT; an awaitable when the session must wait for it to finish
        (a retained message being stored) before it reads the next packet."""

    @abc.abstractmethod
    def encode_publish(self, message: Message, qos: int) -> bytes:
        """The PUBLISH that delivers ``message`` at ``qos`` (any packet identifier)."""

    def written(self, message: Message) -> None:  # noqa: B027  (optional hook)
        """``message``'s PUBLISH was handed to the socket (MQTT 5 confirms topic aliases)."""

    @abc.abstractmethod
    def disconnect_packet(self, reason: DisconnectReasonCode, text: str | None) -> bytes | None:
        """What to write before the server closes (``None``: 3.1.1 just closes)."""
