"""The bus between gateway workers: what the broker hands on, and what it gets back.

A gateway worker routes a PUBLISH to its own sessions itself (:class:`~tether.cloud.gateway.
broker.Broker`); the bus carries it to the *other* workers, on this host or another, and brings
theirs in. Two implementations (the transport seam of httpcore, STYLE.md):

- :class:`~tether.cloud.bus.inprocess.InProcessHub` endpoints: brokers in one process (one
  worker, the embedded default; several brokers in one test);
- :class:`~tether.cloud.bus.nats.NatsBus`: one NATS connection per worker, for several workers
  and several hosts (an existing, clusterable engine, not a home-made one).

Contract, identical on both: ``publish`` never blocks and never delivers to the publishing
worker's plain subscriptions (it already did; shared groups are below); a message reaches
every other worker that has declared interest in a filter matching it, at most once, in
publish order per publishing worker; the receiving broker applies MQTT's matching rules itself
(the bus may over-deliver, never decide). Control messages (``announce``/``listen``) reach
every other worker, for cluster-wide facts such as "this client id connected here" (session
takeover).

Shared subscriptions (``$share/<group>/<filter>``, issue 17) ride the same ``publish``: a
worker holding members of a group declares it with ``share``; each published message is
offered once to every (group, filter) in the cluster whose filter matches it, and exactly one
worker holding that group gets it (this worker included: with a bus the broker does not
deliver to its shared groups itself), through the ``attach_shared`` receiver. The receiver
answers whether a member took it; if none did, the bus passes it on to another worker of the
group (bounded). With one worker this is today's local round robin, synchronously.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tether.cloud.gateway.broker import Message

Receiver = Callable[["Message"], None]
ControlHandler = Callable[[bytes], None]
# (group, filter, message) -> whether a member of this worker took it
SharedReceiver = Callable[[str, str, "Message"], bool]
ClosingHook = Callable[[], Awaitable[None]]


class Bus(Protocol):
    """One worker's end of the bus (see the module docstring for the contract)."""

    worker_id: str  # unique per worker and start: what "not back to the publisher" compares

    def attach(self, receiver: Receiver) -> None:
        """Where messages from other workers go (the broker's ``deliver_from_bus``)."""
        ...

    def publish(self, message: Message) -> None:
        """Hand ``message`` to the other workers; never blocks, never raises for the bus."""
        ...

    def want(self, topic_filter: str) -> None:
        """This worker has a session subscribed to ``topic_filter`` (first one)."""
        ...

    def unwant(self, topic_filter: str) -> None:
        """No session of this worker holds ``topic_filter`` any more."""
        ...

    def attach_shared(self, receiver: SharedReceiver) -> None:
        """Where copies for this worker's shared groups go (the broker's ``deliver_shared``)."""
        ...

    def share(self, group: str, topic_filter: str) -> None:
        """This worker has a member of ``$share/<group>/<topic_filter>`` (first one)."""
        ...

    def unshare(self, group: str, topic_filter: str) -> None:
        """The last member of that group on this worker left."""
        ...

    def announce(self, channel: str, payload: bytes) -> None:
        """Tell every other worker ``payload`` on ``channel`` (a lowercase word)."""
        ...

    def listen(self, channel: str, handler: ControlHandler) -> None:
        """Call ``handler(payload)`` for every other worker's ``announce`` on ``channel``."""
        ...

    def on_closing(self, hook: ClosingHook) -> None:
        """Await ``hook()`` first thing in ``close``, while the bus still carries (bounded):
        a stopping worker's last word (gateway/handover.py: "I hold no session any more")."""
        ...

    async def start(self) -> None:
        """Connect (a no-op in process)."""
        ...

    async def close(self) -> None:
        """Flush what is queued (bounded) and disconnect."""
        ...
