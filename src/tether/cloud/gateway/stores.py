"""Where MQTT state that outlives a connection lives: the session and retained-message stores.

Persistent sessions, queued messages and retained messages must survive a gateway restart and
be shared by every worker (a device may reconnect to another worker; a retained message set
on one must be read on all). Routing between workers is NATS's job (the broker interface);
*state* is the registry's: it is already the one database every worker and host opens, it
survives restarts, and PostgreSQL scales it. So the gateway talks to two small interfaces,
and :class:`tether.cloud.registry.mqtt_state.RegistryMqttState` implements both on the
registry's database. They are sync (the registry is); the gateway calls them in a worker
thread like its verdicts. Nothing here touches the broker's internals.

Bounds, per identity, from :class:`StoreLimits`: retained messages (count and bytes; a
retained message over either bound is refused, the ones stored stay), queued messages of an
offline session (count and bytes; overflow refuses the newest, so what a device gets on
reconnect is the oldest messages in order, never a gap in the middle), and the session
expiry (a requested expiry is capped at ``max_session_expiry``).

Both are wired in through the broker by whoever builds the gateway: ``Broker.retained``
(:mod:`tether.cloud.gateway.retained`) and ``Broker.sessions``
(:mod:`tether.cloud.gateway.persistence`); see docs/decisions.md (issue 17).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Per-identity bounds of the stores (see the module docstring)."""

    max_retained_per_identity: int = 100
    max_retained_bytes_per_identity: int = 1024 * 1024
    max_queued_per_session: int = 1000
    max_queued_bytes_per_session: int = 1024 * 1024
    max_session_expiry: int = 7 * 24 * 3600  # AWS IoT's upper bound; default 1 h is the caller's


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as stored: enough to deliver it again, attributed to its sender."""

    topic: str
    payload: bytes
    qos: int
    sender_kind: str
    sender_name: str
    user_properties: tuple[tuple[str, str], ...] = ()
    # MQTT 5 Message Expiry Interval: as published when stored; as remaining when read back
    # (the store drops a message whose interval has passed, MQTT 5 3.3.2.3.3).
    expiry_interval: int | None = None


@dataclass(frozen=True, slots=True)
class StoredSubscription:
    """One filter of a persistent session."""

    topic_filter: str
    max_qos: int
    no_local: bool = False
    subscription_id: int | None = None


@dataclass(frozen=True, slots=True)
class StoredOutgoing:
    """An outgoing QoS 1/2 message the client had not acknowledged when it went.

    ``message`` is resent with DUP=1 under ``packet_id`` on resume; ``message`` None means
    PUBREC had come and PUBREL is owed again (MQTT 5 section 4.4).
    """

    packet_id: int
    message: StoredMessage | None


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A persistent session of one identity, while it is offline."""

    kind: str
    name: str
    expires_at: datetime
    subscriptions: tuple[StoredSubscription, ...]
    qos2_received: tuple[int, ...] = ()  # incoming QoS 2 identifiers routed, not yet released
    outgoing: tuple[StoredOutgoing, ...] = ()  # unacknowledged outgoing QoS 1/2, oldest first
    # The certificate and CA it was last connected with ("" if stored before they were kept):
    # what a revocation or a CA deactivation is matched on while the client is away.
    certificate_fingerprint: str = ""
    issuer_fingerprint: str = ""


class StoreOutcome(enum.Enum):
    """What a bounded write did."""

    STORED = "stored"
    CLEARED = "cleared"  # an empty retained payload removed the topic's message
    OVER_COUNT = "over_count"  # refused: the identity's count bound
    OVER_BYTES = "over_bytes"  # refused: the identity's byte bound
    NO_SESSION = "no_session"  # queued for an identity without a live persistent session


class RetainedStore(Protocol):
    """Retained messages, one per topic, bounded per sender identity."""

    def set_retained(self, message: StoredMessage) -> StoreOutcome:
        """Store (or replace) the topic's retained message; an empty payload clears it."""
        ...

    def retained_matching(self, topic_filter: str, limit: int) -> list[StoredMessage]:
        """The retained messages whose topics match ``topic_filter``, at most ``limit``."""
        ...


class SessionStore(Protocol):
    """Persistent sessions and the messages queued for them while they are offline."""

    def save_session(
        self,
        kind: str,
        name: str,
        expiry: int,
        subscriptions: Sequence[StoredSubscription],
        qos2_received: Sequence[int] = (),
        outgoing: Sequence[StoredOutgoing] = (),
        *,
        certificate_fingerprint: str = "",
        issuer_fingerprint: str = "",
    ) -> StoredSession:
        """Keep the session for ``expiry`` seconds (capped) from now, replacing an older one.

        ``qos2_received`` keeps exactly-once across a reconnect mid-flow: a PUBLISH resent
        after it is acknowledged, not routed again, and its PUBREL completes. ``outgoing``
        is what the gateway owes the client (resent on resume, MQTT 5 section 4.4).
        """
        ...

    def load_session(self, kind: str, name: str) -> StoredSession | None:
        """The session if it exists and has not expired (an expired one is deleted)."""
        ...

    def list_sessions(self) -> list[StoredSession]:
        """Every stored session that has not expired (the gateway restores them at start)."""
        ...

    def delete_session(self, kind: str, name: str) -> bool:
        """Delete the session and its queue (Clean Start, revocation); ``True`` if one existed."""
        ...

    def enqueue(self, kind: str, name: str, message: StoredMessage) -> StoreOutcome:
        """Queue a QoS 1/2 message for an offline session, within the bounds."""
        ...

    def take_queued(self, kind: str, name: str, limit: int) -> list[StoredMessage]:
        """Remove and return the oldest queued messages, in order, at most ``limit``."""
        ...
