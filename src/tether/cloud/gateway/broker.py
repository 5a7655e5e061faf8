"""Subscription routing: who receives a message published to a topic.

Retained messages and persistent sessions are not routing state: they hang off the broker as
``retained`` and ``sessions`` (gateway/retained.py, gateway/persistence.py), shared groups are
extra subscribers (gateway/shared.py), and other workers are reached through ``bus``.
Routing walks a :class:`~tether.cloud.gateway.topictree.TopicTree`, so
a publish costs the filters that match it, not every filter of every session; how many filters
a session may hold is the session's business (:mod:`tether.cloud.gateway.limits`). Everything
runs on the gateway's event loop; nothing here blocks or awaits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tether.cloud.gateway.identity import Identity
from tether.cloud.gateway.stats import GatewayStats
from tether.cloud.gateway.topictree import TopicTree

if TYPE_CHECKING:
    from tether.cloud.bus.base import Bus
    from tether.cloud.gateway.persistence import PersistentSessions
    from tether.cloud.gateway.reserved import ReservedTopics
    from tether.cloud.gateway.retained import RetainedMessages

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
    retain: bool = False  # a retained message delivered to a new subscription (issue 17)
    # The PUBLISH had RETAIN 1: a subscription with Retain As Published gets RETAIN 1 for it
    # when it is forwarded live (MQTT 5 3.3.1.3; without it, RETAIN 0 [MQTT-3.3.1-12]).
    published_retained: bool = False


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
    if not client_properties:  # the common case: nothing to filter
        return ((SENDER_PROPERTY, sender.name),)
    kept = tuple(item for item in client_properties if item[0] != SENDER_PROPERTY)
    return (*kept, (SENDER_PROPERTY, sender.name))


class Broker:
    """Subscriptions per subscriber, and fan-out of published messages."""

    def __init__(self, stats: GatewayStats | None = None, *, bus: Bus | None = None) -> None:
        self.stats = stats or GatewayStats()  # messages in and out, for the metrics
        self._tree: TopicTree[Subscriber, Subscription] = TopicTree()
        self._filters: dict[Subscriber, dict[str, Subscription]] = {}
        # The handler of ``$tether/...`` publishes (gateway/reserved.py), if one is attached.
        self.reserved: ReservedTopics | None = None
        # Retained messages (issue 17): set by whoever builds the gateway, else unavailable.
        # Not routing state, so it does not live in the tree: see gateway/retained.py.
        self.retained: RetainedMessages | None = None
        # Persistent sessions (issue 17), the same way: None = no session outlives a connection.
        self.sessions: PersistentSessions | None = None
        self.bus = bus
        self._holders: Counter[str] = Counter()  # filter -> sessions holding it (bus interest)
        # Shared groups reached through the bus (gateway/shared.py): (group, filter) -> group.
        self._shared: dict[tuple[str, str], Subscriber] = {}
        if bus is not None:
            bus.attach(self.deliver_from_bus)
            bus.attach_shared(self.deliver_shared)

    def subscribe(self, subscriber: Subscriber, subscription: Subscription) -> bool:
        """Add or replace a subscription; ``True`` if it replaced one with the same filter."""
        filters = self._filters.setdefault(subscriber, {})
        filters[subscription.topic_filter] = subscription
        replaced = self._tree.add(subscription.topic_filter, subscriber, subscription)
        if not replaced:
            self._hold(subscription.topic_filter)
        return replaced

    def unsubscribe(self, subscriber: Subscriber, topic_filter: str) -> bool:
        """Remove a subscription; ``True`` if it existed."""
        filters = self._filters.get(subscriber)
        if filters is None or filters.pop(topic_filter, None) is None:
            return False
        self._tree.remove(topic_filter, subscriber)
        self._release(topic_filter)
        return True

    def has_subscription(self, subscriber: Subscriber, topic_filter: str) -> bool:
        """Whether ``subscriber`` holds ``topic_filter`` (a SUBSCRIBE would replace it)."""
        return topic_filter in self._filters.get(subscriber, {})

    def remove(self, subscriber: Subscriber) -> None:
        """Forget every subscription of a closed session."""
        for topic_filter in self._filters.pop(subscriber, {}):
            self._tree.remove(topic_filter, subscriber)
            self._release(topic_filter)

    def subscription_count(self, subscriber: Subscriber | None = None) -> int:
        """How many subscriptions are live, in all or for one subscriber."""
        if subscriber is not None:
            return len(self._filters.get(subscriber, {}))
        return len(self._tree)

    def publish(self, message: Message, *, origin: Subscriber | None = None) -> int:
        """Deliver to every matching subscriber once, at min(message QoS, best granted QoS).

        ``origin`` is the publishing session, so its ``no_local`` subscriptions are skipped.
        Returns how many subscribers matched (delivered or dropped by the subscriber) on this
        worker, plus one when a bus carries it on: this worker cannot know whether another
        has a subscriber, so it never answers 0x10 "no matching subscribers" for it.
        """
        matched = self._route(message, origin)
        if self.bus is not None:
            self.bus.publish(message)
            return matched + 1
        return matched

    def publish_here(self, message: Message) -> int:
        """Deliver to this worker's sessions only, never handing the message to the bus.

        For messages every worker makes for itself from the registry (enrollment's "renew
        now", read from the audit log by each worker): through the bus each would arrive once
        per worker.
        """
        return self._route(message, None)

    def deliver_from_bus(self, message: Message) -> int:
        """Route a message another worker published to this worker's sessions only."""
        return self._route(message, None)

    def share(self, group: str, topic_filter: str, members: Subscriber) -> None:
        """With a bus: ``members`` (a shared group) takes the copies the bus hands this worker
        for ``$share/<group>/<topic_filter>``; it is not routed locally (the bus picks one
        worker per message, this one included). Without a bus, use ``subscribe``."""
        assert self.bus is not None
        self._shared[(group, topic_filter)] = members
        self.bus.share(group, topic_filter)

    def unshare(self, group: str, topic_filter: str) -> None:
        """The group of ``share`` emptied on this worker."""
        if self._shared.pop((group, topic_filter), None) is not None and self.bus is not None:
            self.bus.unshare(group, topic_filter)

    def deliver_shared(self, group: str, topic_filter: str, message: Message) -> bool:
        """The bus chose this worker for a shared group's copy: ``True`` if a member took it."""
        members = self._shared.get((group, topic_filter))
        if members is None:
            return False  # the group emptied meanwhile: the bus passes it on
        if members.deliver(message, message.qos):
            self.stats.messages_delivered += 1
            return True
        self.stats.messages_dropped += 1
        return False

    def _hold(self, topic_filter: str) -> None:
        self._holders[topic_filter] += 1
        if self._holders[topic_filter] == 1 and self.bus is not None:
            self.bus.want(topic_filter)

    def _release(self, topic_filter: str) -> None:
        self._holders[topic_filter] -= 1
        if self._holders[topic_filter] <= 0:
            del self._holders[topic_filter]
            if self.bus is not None:
                self.bus.unwant(topic_filter)

    def _route(self, message: Message, origin: Subscriber | None) -> int:
        best: dict[Subscriber, int] = {}
        for subscriber, subscription in self._tree.matching(message.topic):
            if subscription.no_local and subscriber is origin:
                continue
            best[subscriber] = max(best.get(subscriber, 0), subscription.max_qos)
        stats = self.stats
        stats.messages_received += 1
        for subscriber, qos in best.items():
            if subscriber.deliver(message, min(message.qos, qos)):
                stats.messages_delivered += 1
            else:
                stats.messages_dropped += 1
        return len(best)
