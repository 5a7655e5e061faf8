"""The in-process bus: brokers of one process, each its own "worker".

With one endpoint (what a single-worker ``tether cloud serve`` and most tests use) it carries
nothing: the broker already delivered to every session it has, which is today's behaviour.
With several endpoints on one hub, a message published at one reaches the others on their
next loop iteration (``call_soon_threadsafe`` on the loop each endpoint started on, so the
brokers may run on one loop or on several threads; never inside the publisher's call),
so the cross-worker rules (no echo, one copy, takeover) are testable without a server.

Shared groups: the hub knows which endpoints hold members of each (group, filter) and offers
each matching message to one of them in turn; an endpoint whose members all drop it passes
it to the next one. The publisher's own endpoint is served inside ``publish`` (so one
endpoint is exactly the broker's former local round robin), the others on their loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tether.cloud.bus.base import ClosingHook, ControlHandler, Receiver, SharedReceiver
from tether.cloud.gateway.topics import matches

if TYPE_CHECKING:
    from tether.cloud.gateway.broker import Message

_ids = itertools.count(1)
CLOSING_TIMEOUT = 5.0  # seconds a closing hook may take


class InProcessHub:
    """The shared medium of in-process endpoints (one per broker)."""

    def __init__(self) -> None:
        self.endpoints: list[InProcessBus] = []
        self.shares: dict[tuple[str, str], list[InProcessBus]] = {}  # (group, filter) -> holders
        self._turns: Counter[tuple[str, str]] = Counter()

    def offer(self, publisher: InProcessBus, message: Message) -> None:
        """Hand ``message`` to one holder of every shared group whose filter matches it."""
        for key, holders in list(self.shares.items()):
            if not holders or not matches(key[1], message.topic):
                continue
            turn = self._turns[key] % len(holders)
            self._turns[key] = turn + 1
            _hand([*holders[turn:], *holders[:turn]], key, message, publisher)

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
        self._shared_receiver: SharedReceiver | None = None
        self._closing: list[ClosingHook] = []
        self._wanted: Counter[str] = Counter()
        self._handlers: dict[str, list[ControlHandler]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, receiver: Receiver) -> None:
        """Where messages from the hub's other endpoints go."""
        self._receiver = receiver

    def attach_shared(self, receiver: SharedReceiver) -> None:
        """Where copies for this endpoint's shared groups go."""
        self._shared_receiver = receiver

    def share(self, group: str, topic_filter: str) -> None:
        """This endpoint holds members of ``$share/<group>/<topic_filter>``."""
        holders = self.hub.shares.setdefault((group, topic_filter), [])
        if self not in holders:
            holders.append(self)

    def unshare(self, group: str, topic_filter: str) -> None:
        """This endpoint holds no member of that group any more."""
        holders = self.hub.shares.get((group, topic_filter), [])
        if self in holders:
            holders.remove(self)
        if not holders:
            self.hub.shares.pop((group, topic_filter), None)

    def publish(self, message: Message) -> None:
        """Schedule delivery to every other endpoint with a matching filter (once each), and
        offer the message to the hub's shared groups (this endpoint's own ones inline)."""
        if self.hub.shares:
            self.hub.offer(self, message)
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

    def on_closing(self, hook: ClosingHook) -> None:
        """Await ``hook()`` at the start of ``close``."""
        self._closing.append(hook)

    async def close(self) -> None:
        """Run the closing hooks (bounded), then leave the hub."""
        hooks, self._closing = self._closing, []
        for hook in hooks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(hook(), CLOSING_TIMEOUT)
        if self in self.hub.endpoints:
            self.hub.endpoints.remove(self)
        for group, topic_filter in list(self.hub.shares):
            self.unshare(group, topic_filter)

    def _schedule(self, callback: Callable[[Any], None], argument: Any) -> None:
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        if not loop.is_closed():
            loop.call_soon_threadsafe(callback, argument)

    def _interested(self, topic: str) -> bool:
        return any(matches(topic_filter, topic) for topic_filter in self._wanted)

    def _receive(self, message: Message) -> None:
        if self._receiver is not None:
            self._receiver(message)


def _hand(
    candidates: list[InProcessBus], key: tuple[str, str], message: Message, inline: object
) -> None:
    """Offer to ``candidates[0]`` (inline if it is ``inline``), then the rest if it drops."""
    first, rest = candidates[0], candidates[1:]

    def attempt(_: object = None) -> None:
        receiver = first._shared_receiver
        taken = receiver is not None and receiver(key[0], key[1], message)
        if not taken and rest:
            _hand(rest, key, message, None)

    if first is inline:
        attempt()
    else:
        first._schedule(attempt, None)
