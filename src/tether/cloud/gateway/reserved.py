"""Reserved topics: ``$tether/...`` publishes that the cloud itself answers (issue 16).

A client publish whose topic starts with ``$tether/`` is not routed to subscribers and not
judged by the topic policy: the session hands it to the broker's ``reserved`` handler (if
one is attached, e.g. enrollment: :mod:`tether.cloud.enrollment.mqtt`), which authorizes it by
the connection's ``Identity`` and answers later on the client's session (MQTT 5 request/response:
the request's Response Topic and Correlation Data). The reply is written to the requesting
session directly, so the client needs no subscription first and no other client can see it
(no subscribe-first race, no reply-topic squatting). Without a handler every reserved publish
is refused (PUBACK 0x87, or DISCONNECT 0x87 at QoS 0, like a policy refusal).
"""

from __future__ import annotations

from typing import Protocol

from mqtt5 import DisconnectReasonCode

from tether.cloud.gateway.broker import Message
from tether.cloud.gateway.identity import Identity

RESERVED_PREFIX = "$tether/"


class ReservedClient(Protocol):
    """The requesting session, as a reserved-topic handler sees it (``Session`` is one)."""

    identity: Identity

    def deliver(self, message: Message, qos: int) -> bool:
        """Write ``message`` to this client; ``False`` if it was dropped."""
        ...

    def disconnect(self, reason: DisconnectReasonCode, reason_str: str | None = None) -> None:
        """End the session (after what was delivered is written)."""
        ...


class ReservedTopics(Protocol):
    """Answers publishes to ``$tether/...``; must not block (it runs on the event loop)."""

    def handle(self, client: ReservedClient, message: Message) -> bool:
        """Accept the request (``True``: answered later through ``client.deliver``) or not."""
        ...
