"""In-process subscription routing: who receives a message published to a topic.

No retained messages, no persistent sessions, no shared subscriptions: a subscription lives
as long as its session. Routing scans the subscriptions (fine for thousands of sessions on one
gateway; a topic tree is the upgrade path if profiling says so). Everything runs on the
gateway's event loop; nothing here blocks or awaits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tether.cloud.gateway.identity import Identity
from tether.cloud.gateway.topics import matches

SENDER_PROPERTY = "tether-sender"


@dataclass(frozen=True)
class Message:
    """A PUBLISH as routed: the topic, the payload, the properties forwarded, and its sender.

    ``user_properties`` already carries ``tether-sender`` = ``sender.name`` (and no copy of
    that property from the client): see :func:`attributed_properties`.
    """

    topic: str
    payload: bytes
    qos: int
    sender: Identity
    user_properties: tuple[tuple[str, str], ...] = ()
    payload_format_indicator: int = 0
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None


@dataclass(frozen=True)
class Subscription:
    """One accepted topic filter of a session."""

    topic_filter: str
    max_qos: int
    no_local: bool = False


class Subscriber(Protocol):
    """A session as the broker sees it: something that takes messages without blocking."""

    def deliver(self, message: Message, qos: int) -> bool:
        """Queue ``message`` at ``qos``; ``False`` if dropped (closing, slow, too big)."""
        ...


def attributed_properties(
    sender: Identity, client_properties: list[tuple[str, str]]
) -> tuple[tuple[str, str], ...]:
    """The client's user properties minus any ``tether-sender``, plus the real sender last."""
    kept = tuple(item for item in client_properties if item[0] != SENDER_PROPERTY)
    return (*kept, (SENDER_PROPERTY, sender.name))


class Broker:
    """Subscriptions per subscriber, and fan-out of published messages."""

    def __init__(self) -> None:
        self._subscriptions: dict[Subscriber, dict[str, Subscription]] = {}

    def subscribe(self, subscriber: Subscriber, subscription: Subscription) -> bool:
        """Add or replace a subscription; ``True`` if it replaced one with the same filter."""
        filters = self._subscriptions.setdefault(subscriber, {})
        existed = subscription.topic_filter in filters
        filters[subscription.topic_filter] = subscription
        return existed

    def unsubscribe(self, subscriber: Subscriber, topic_filter: str) -> bool:
        """Remove a subscription; ``True`` if it existed."""
        filters = self._subscriptions.get(subscriber)
        if filters is None or topic_filter not in filters:
            return False
        del filters[topic_filter]
        return True

    def remove(self, subscriber: Subscriber) -> None:
        """Forget every subscription of a closed session."""
        self._subscriptions.pop(subscriber, None)

    def subscription_count(self) -> int:
        """How many subscriptions are live (for tests and metrics)."""
        return sum(len(filters) for filters in self._subscriptions.values())

    def publish(self, message: Message, *, origin: Subscriber | None = None) -> int:
        """Deliver to every matching subscriber once, at min(message QoS, best granted QoS).

        ``origin`` is the publishing session, so its ``no_local`` subscriptions are skipped.
        Returns how many subscribers matched (delivered or dropped by the subscriber).
        """
        matched = 0
        for subscriber, filters in list(self._subscriptions.items()):
            best: int | None = None
            for subscription in filters.values():
                if subscription.no_local and subscriber is origin:
                    continue
                if matches(subscription.topic_filter, message.topic):
                    best = max(best or 0, subscription.max_qos)
            if best is not None:
                matched += 1
                subscriber.deliver(message, min(message.qos, best))
        return matched
