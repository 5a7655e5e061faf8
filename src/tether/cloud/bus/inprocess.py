"""The in-process bus: brokers of one process, each its own "worker".

With one endpoint (what a single-worker ``tether cloud serve`` and most tests use) it carries
nothing: the broker already delivered to every session it has, which is today's behaviour.
With several endpoints on one hub, a message published at one reaches the others on their
next loop iteration (``call_soon_threadsafe`` on the loop each endpoint started on, so the
brokers may run on one loop or on several threads; never inside the publisher's call),
so the cross-worker rules (no echo, one copy, takeover) are testable without a server.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tether.cloud.bus.base import ControlHandler, Receiver
from tether.cloud.gateway.topics import matches

if TYPE_CHECKING:
    from tether.cloud.gateway.broker import Message

_ids = itertools.count(1)


class InProcessHub:
    """The shared medium of in-process endpoints (one per broker)."""

    def __init__(self) -> None:
        self.endpoints: list[InProcessBus] = []

    def endpoint(self) -> InProcessBus:
        """A new endpoint on this hub (one broker's bus)."""
        return InProcessBus(self)


class InProcessBus:
    """One endpoint of an :class:`InProcessHub` (implements ``tether.cloud.bus.Bus``)."""

    def __init__(self, hub: InProcessHub | None = None) -> None:
        self.hub = hub if hub is not None else InProcessHub()
        if self not in self.hub.endpoints:
            self.hub.endpoints.append(self)
        self.worker_id = f"inprocess-{next(_ids)}"
        self._receiver: Receiver | None = None
        self._wanted: Counter[str] = Counter()
        self._handlers: dict[str, list[ControlHandler]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, receiver: Receiver) -> None:
        """Where messages from the hub's other endpoints go."""
        self._receiver = receiver

    def publish(self, message: Message) -> None:
        """Schedule delivery to every other endpoint with a matching filter (once each)."""
        if len(self.hub.endpoints) == 1:
            return
        for other in self.hub.endpoints:
            if other is not self and other._interested(message.topic):
                other._schedule(other._receive, message)

    def want(self, topic_filter: str) -> None:
        """Declare interest in ``topic_filter``."""
        self._wanted[topic_filter] += 1

    def unwant(self, topic_filter: str) -> None:
        """Withdraw interest in ``topic_filter``."""
        self._wanted[topic_filter] -= 1
        if self._wanted[topic_filter] <= 0:
            del self._wanted[topic_filter]

    def announce(self, channel: str, payload: bytes) -> None:
        """Schedule ``payload`` to every other endpoint's ``channel`` handlers."""
        for other in self.hub.endpoints:
            if other is not self:
                for handler in other._handlers.get(channel, ()):
                    other._schedule(handler, payload)

    def listen(self, channel: str, handler: ControlHandler) -> None:
        """Call ``handler`` for other endpoints' announcements on ``channel``."""
        self._handlers.setdefault(channel, []).append(handler)

    async def start(self) -> None:
        """Note the loop this endpoint's broker runs on (deliveries are scheduled there)."""
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        """Leave the hub."""
        if self in self.hub.endpoints:
            self.hub.endpoints.remove(self)

    def _schedule(self, callback: Callable[[Any], None], argument: Any) -> None:
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        if not loop.is_closed():
            loop.call_soon_threadsafe(callback, argument)

    def _interested(self, topic: str) -> bool:
        return any(matches(topic_filter, topic) for topic_filter in self._wanted)

    def _receive(self, message: Message) -> None:
        if self._receiver is not None:
            self._receiver(message)
