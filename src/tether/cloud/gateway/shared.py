"""Shared subscriptions (MQTT 5 section 4.8.2): ``$share/<group>/<filter>``, load-balanced.

Only service identities may share (a fleet's back end scales out by adding consumers to a
group; a device has no use for it, and letting devices join would let one device take
another's share of a service's messages): a device gets SUBACK 0x87. The filter after the
group is held to the policy like any other.

Each (broker, group, filter) is one :class:`SharedGroup`, a subscriber of its own in the
broker: every matching message goes to exactly one member, in turn (round robin); a member
that drops it (closing, slow, too big) passes it to the next, so a message is lost only if
every member drops it. No retained messages are sent for a shared subscription (spec
3.8.4).

Across workers (a broker with a bus), the group is not a subscriber in the broker's tree:
it is registered with ``Broker.share`` and the bus (NATS queue groups, or the in-process
hub) hands each matching message to exactly one worker holding the group, the publishing
one included; that worker's group picks the member as above. If every member of that worker
drops it, the bus passes it on to another worker of the group (bounded: see
:mod:`tether.cloud.bus.nats`). So a message is delivered once in the whole cluster, and lost
only if no member anywhere takes it. Attribution and policy are those of any delivery.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from tether.cloud.gateway.broker import Broker, Message, Subscriber, Subscription
from tether.cloud.gateway.topics import SHARED_PREFIX, is_valid_topic_filter

MAX_QOS = 2


@dataclass(frozen=True, slots=True)
class SharedFilter:
    """A parsed ``$share/<group>/<filter>``."""

    group: str
    inner: str


def parse_shared(topic_filter: str) -> SharedFilter | None:
    """The group and filter of a shared subscription, or ``None`` if it is not a valid one."""
    rest = topic_filter[len(SHARED_PREFIX) :]
    group, _, inner = rest.partition("/")
    if not group or "+" in group or "#" in group or not inner:
        return None
    if not is_valid_topic_filter(inner) or inner.startswith("$"):
        return None
    return SharedFilter(group, inner)


class SharedGroup:
    """The members of one share group on one filter; delivers each message to one of them."""

    def __init__(self, broker: Broker, key: SharedFilter) -> None:
        self._broker = broker
        self.key = key
        self._members: dict[Subscriber, int] = {}  # member -> granted QoS
        self._turn = 0
        if broker.bus is None:
            broker.subscribe(self, Subscription(key.inner, MAX_QOS))
        else:
            broker.share(key.group, key.inner, self)

    def join(self, member: Subscriber, granted: int) -> None:
        """Add (or update) a member."""
        self._members[member] = granted

    def leave(self, member: Subscriber) -> bool:
        """Remove a member; ``True`` if the group is empty now (and left the broker)."""
        self._members.pop(member, None)
        if self._members:
            return False
        if self._broker.bus is None:
            self._broker.remove(self)
        else:
            self._broker.unshare(self.key.group, self.key.inner)
        return True

    def deliver(self, message: Message, qos: int) -> bool:
        """Hand the message to the next member that takes it."""
        members = list(self._members.items())
        for offset in range(len(members)):
            member, granted = members[(self._turn + offset) % len(members)]
            if member.deliver(message, min(qos, granted)):
                self._turn = (self._turn + offset + 1) % len(members)
                return True
        return False


_GROUPS: weakref.WeakKeyDictionary[Broker, dict[SharedFilter, SharedGroup]] = (
    weakref.WeakKeyDictionary()
)


def join(broker: Broker, key: SharedFilter, member: Subscriber, granted: int) -> SharedGroup:
    """Join ``member`` to the broker's group for ``key`` (made on first use)."""
    groups = _GROUPS.setdefault(broker, {})
    group = groups.get(key)
    if group is None:
        group = groups[key] = SharedGroup(broker, key)
    group.join(member, granted)
    return group


def leave(broker: Broker, group: SharedGroup, member: Subscriber) -> None:
    """Take ``member`` out of ``group``; an empty group is forgotten."""
    if group.leave(member):
        _GROUPS.get(broker, {}).pop(group.key, None)
