"""The NATS bus: one connection per gateway worker, subjects mapped from MQTT topics.

Routing: a worker subscribes (once per distinct topic filter its sessions hold) to the
subjects of :func:`~tether.cloud.bus.subjects.filter_subjects`, and publishes every routed
message to :func:`~tether.cloud.bus.subjects.topic_subject`. The header of each message (see
:mod:`tether.cloud.bus.codec`) names the origin worker, so a worker skips its own messages
and a second copy (one per matching NATS subscription). Control messages go to
``tether.ctl.<channel>``.

Shared subscriptions (issue 17): every routed message is also published once to
:func:`~tether.cloud.bus.subjects.shared_topic_subject`; a worker holding members of
``$share/<group>/<filter>`` subscribes to the filter's shared subjects in the NATS queue
group :func:`~tether.cloud.bus.subjects.shared_queue`, so NATS gives each copy to exactly one
worker per (group, filter), the publisher included (no origin check on this path). The
worker hands it to its own members in turn (the broker's ``deliver_shared``); if every one of
them drops it (closing, slow, queue full) or the group just emptied, the copy is passed on to
:func:`~tether.cloud.bus.subjects.passed_subject` of that queue group only, at most
``MAX_HOPS`` times, then dropped and counted (``shared_lost``). Passing on may land on the
same worker again (NATS picks): the bound keeps a group whose every member is slow from
spinning. The cost is one more NATS message per routed message, whether or not a group
exists (the publisher cannot know the groups of the other workers without a race).

``publish`` is synchronous, as the broker's is: messages and (un)subscriptions go into one
ordered queue that a single task writes to the connection, so a subscription made before a
publish on this worker is on the wire before it. The queue is bounded (``max_queued``); past
it a message is dropped and counted, never buffered without limit, and a slow NATS server
cannot grow the gateway's memory. nats-py reconnects by itself (to any server of the list)
and re-subscribes; while it is disconnected it keeps up to ``pending_bytes`` of outgoing data
and sends it after the reconnect.

What a PUBACK promises once the bus sits between publisher and subscriber (README, "Several
workers, several hosts"): the message was delivered to every matching session of this worker
and queued, in order, on this worker's NATS connection. Core NATS does not store messages: a
message a NATS node had taken but not yet forwarded when it died is lost for subscribers
behind other nodes; nothing is ever delivered twice, and messages keep their order per
publisher. JetStream is the engine's answer when a deployment needs more.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from tether.cloud.bus import codec
from tether.cloud.bus.base import ClosingHook, ControlHandler, Receiver, SharedReceiver
from tether.cloud.bus.subjects import (
    filter_subjects,
    passed_subject,
    shared_filter_subjects,
    shared_queue,
    shared_topic_subject,
    topic_subject,
)
from tether.cloud.gateway.topics import matches
from tether.errors import ConfigurationError

if TYPE_CHECKING:
    from tether.cloud.gateway.broker import Message

log = logging.getLogger("tether.bus")

CONTROL_PREFIX = "tether.ctl."
DEFAULT_MAX_QUEUED = 100_000
DEFAULT_PENDING_BYTES = 8 * 1024 * 1024
MAX_HOPS = 3  # times a shared copy is passed on before it is dropped


class BusUnavailableError(ConfigurationError):
    """The NATS server(s) could not be reached at start."""

    code = "bus_unavailable"


class NatsBus:
    """One worker's NATS connection (implements ``tether.cloud.bus.Bus``)."""

    def __init__(
        self,
        servers: Sequence[str],
        *,
        name: str = "tether-gateway",
        max_queued: int = DEFAULT_MAX_QUEUED,
        pending_bytes: int = DEFAULT_PENDING_BYTES,
        connect_timeout: float = 5.0,
    ) -> None:
        self.servers = list(servers)
        self.worker_id = f"{os.getpid()}-{secrets.token_hex(6)}"
        self.name = name
        self.dropped = 0  # messages refused because the queue was full
        self.malformed = 0  # bus messages that did not decode
        self.failed_writes = 0  # queue items the connection refused (logged sparsely)
        self.shared_lost = 0  # shared copies no member took after MAX_HOPS passes
        self._max_queued = max_queued
        self._pending_bytes = pending_bytes
        self._connect_timeout = connect_timeout
        self._receiver: Receiver | None = None
        self._shared_receiver: SharedReceiver | None = None
        self._shares: dict[tuple[str, str], list[NatsSubscription]] = {}
        self._closing: list[ClosingHook] = []
        self._handlers: dict[str, list[ControlHandler]] = {}
        self._queue: deque[tuple[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._nc: Client | None = None
        self._subs: dict[str, list[NatsSubscription]] = {}
        self._sequence = itertools.count(1)
        self._dedup = codec.Dedup()

    @property
    def connected(self) -> bool:
        """Whether the NATS connection is up right now."""
        return self._nc is not None and self._nc.is_connected

    async def start(self) -> None:
        """Connect (raises ``BusUnavailableError``) and start the writer task."""
        nc = Client()
        try:
            # nats-py retries the first connection as long as reconnects are allowed: bound it.
            await asyncio.wait_for(
                nc.connect(
                    servers=self.servers,
                    name=f"{self.name} {self.worker_id}",
                    connect_timeout=self._connect_timeout,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.2,
                    pending_size=self._pending_bytes,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                    error_cb=self._error,
                ),
                self._connect_timeout * len(self.servers) + 1.0,
            )
        except Exception as exc:  # nats-py raises its own tree, OSError, TimeoutError
            with contextlib.suppress(Exception):
                await nc.close()
            raise BusUnavailableError(
                f"Cannot reach NATS at {', '.join(self.servers)} ({type(exc).__name__}: {exc}); "
                "start nats-server or fix nats_url in cloud.json."
            ) from exc
        self._nc = nc
        for channel in self._handlers:
            await self._nc.subscribe(CONTROL_PREFIX + channel, cb=self._on_control)
        self._pump = asyncio.create_task(self._write(), name="tether-bus-writer")

    async def close(self) -> None:
        """Run the closing hooks, write what is queued (each bounded by a few seconds), then
        close the connection."""
        hooks, self._closing = self._closing, []
        for hook in hooks if self._pump is not None else ():
            try:
                await asyncio.wait_for(hook(), 5.0)
            except Exception:
                log.exception("a bus closing hook failed")
        if self._pump is not None:
            self._queue.append(("stop", None))
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._pump, 5.0)
            self._pump = None
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.drain(), 5.0)
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued so far has reached the NATS server (PING/PONG)."""
        done = asyncio.get_running_loop().create_future()
        self._enqueue("flush", done)
        await asyncio.wait_for(done, timeout)

    # -- the Bus contract --------------------------------------------------------------------

    def attach(self, receiver: Receiver) -> None:
        """Where messages from other workers go."""
        self._receiver = receiver

    def publish(self, message: Message) -> None:
        """Queue ``message`` for the other workers (dropped and counted if the queue is full)."""
        data = codec.encode(message, self.worker_id, next(self._sequence))
        topic = message.topic
        self._enqueue("pubs", (topic_subject(topic), shared_topic_subject(topic), data))

    def attach_shared(self, receiver: SharedReceiver) -> None:
        """Where copies for this worker's shared groups go."""
        self._shared_receiver = receiver

    def share(self, group: str, topic_filter: str) -> None:
        """Join the NATS queue group of ``$share/<group>/<topic_filter>``."""
        self._queue.append(("share", (group, topic_filter)))  # never dropped, as ``want``
        self._wake.set()

    def unshare(self, group: str, topic_filter: str) -> None:
        """Leave that queue group (copies already here are passed on)."""
        self._queue.append(("unshare", (group, topic_filter)))
        self._wake.set()

    def want(self, topic_filter: str) -> None:
        """Subscribe to the subjects that cover ``topic_filter``."""
        self._queue.append(("sub", topic_filter))  # never dropped: interest must not be lost
        self._wake.set()

    def unwant(self, topic_filter: str) -> None:
        """Unsubscribe from ``topic_filter``'s subjects."""
        self._queue.append(("unsub", topic_filter))
        self._wake.set()

    def announce(self, channel: str, payload: bytes) -> None:
        """Send ``payload`` to every other worker's ``channel``."""
        self._queue.append(("ctl", (CONTROL_PREFIX + channel, self._control(payload))))
        self._wake.set()

    def on_closing(self, hook: ClosingHook) -> None:
        """Await ``hook()`` at the start of ``close`` (the connection still carries)."""
        self._closing.append(hook)

    def listen(self, channel: str, handler: ControlHandler) -> None:
        """Call ``handler`` for other workers' announcements on ``channel``.

        Before ``start`` the channel is subscribed at connect; after, through the writer.
        """
        first = channel not in self._handlers
        self._handlers.setdefault(channel, []).append(handler)
        if first and self._nc is not None:
            self._queue.append(("listen", channel))
            self._wake.set()

    # -- inside ------------------------------------------------------------------------------

    def _enqueue(self, kind: str, item: Any) -> None:
        if len(self._queue) >= self._max_queued:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.warning(
                    "bus queue full (%d): %d messages dropped so far",
                    self._max_queued,
                    self.dropped,
                    extra={"tether_code": "bus_queue_full"},
                )
            return
        self._queue.append((kind, item))
        self._wake.set()

    def _control(self, payload: bytes) -> bytes:
        return self.worker_id.encode("ascii") + b"\n" + payload

    async def _write(self) -> None:
        nc = self._nc
        assert nc is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                kind, item = self._queue.popleft()
                try:
                    if kind == "pubs":
                        subject, shared_subject, data = item
                        await nc.publish(subject, data)
                        await nc.publish(shared_subject, data)
                    elif kind == "pub" or kind == "ctl":
                        await nc.publish(*item)
                    elif kind == "share":
                        await self._join(nc, *item)
                    elif kind == "unshare":
                        for sub in self._shares.pop(item, []):
                            await sub.unsubscribe()
                    elif kind == "listen":
                        await nc.subscribe(CONTROL_PREFIX + item, cb=self._on_control)
                    elif kind == "sub":
                        await self._subscribe(nc, item)
                    elif kind == "unsub":
                        for sub in self._subs.pop(item, []):
                            await sub.unsubscribe()
                    elif kind == "flush":
                        try:
                            await nc.flush()
                        except Exception as exc:
                            if not item.done():
                                item.set_exception(exc)
                        else:
                            if not item.done():
                                item.set_result(None)
                    elif kind == "stop":
                        with contextlib.suppress(Exception):
                            await nc.flush(timeout=2)
                        return
                except Exception as exc:  # buffer full while disconnected, connection closed
                    self.failed_writes += 1
                    self.dropped += kind in ("pub", "pubs")
                    if self.failed_writes != 1 and self.failed_writes % 10_000:
                        continue  # one line per 10,000 failures, not one per message
                    log.warning(
                        "bus write failed (%s): %s",
                        type(exc).__name__,
                        exc,
                        extra={"tether_code": "bus_write_failed"},
                    )

    async def _subscribe(self, nc: Client, topic_filter: str) -> None:
        if topic_filter in self._subs:
            return
        self._subs[topic_filter] = [
            await nc.subscribe(subject, cb=self._on_message)
            for subject in filter_subjects(topic_filter)
        ]

    async def _join(self, nc: Client, group: str, topic_filter: str) -> None:
        key = (group, topic_filter)
        if key in self._shares:
            return
        queue = shared_queue(group, topic_filter)

        async def on_copy(msg: Msg) -> None:
            self._on_shared(group, topic_filter, queue, msg)

        subjects = (*shared_filter_subjects(topic_filter), passed_subject(queue))
        self._shares[key] = [
            await nc.subscribe(subject, queue=queue, cb=on_copy) for subject in subjects
        ]

    def _on_shared(self, group: str, topic_filter: str, queue: str, msg: Msg) -> None:
        try:
            envelope = codec.decode(msg.data)
        except ValueError as exc:
            self.malformed += 1
            log.warning("dropped a malformed shared bus message on %s: %s", msg.subject, exc)
            return
        message = envelope.message
        if not matches(topic_filter, message.topic):
            return  # NATS over-matched ($ topics): no worker's group of this filter wants it
        receiver = self._shared_receiver
        if receiver is not None and receiver(group, topic_filter, message):
            return
        if envelope.hops >= MAX_HOPS:
            self.shared_lost += 1
            log.warning(
                "shared message on %r dropped: no member of $share/%s/%s took it",
                message.topic,
                group,
                topic_filter,
                extra={"tether_code": "shared_message_dropped"},
            )
            return
        data = codec.encode(message, envelope.origin, envelope.sequence, envelope.hops + 1)
        self._enqueue("pub", (passed_subject(queue), data))

    async def _on_message(self, msg: Msg) -> None:
        try:
            envelope = codec.decode(msg.data)
        except ValueError as exc:
            self.malformed += 1
            log.warning("dropped a malformed bus message on %s: %s", msg.subject, exc)
            return
        if envelope.origin == self.worker_id:
            return
        if not self._dedup.fresh(envelope.origin, envelope.sequence):
            return
        if self._receiver is not None:
            self._receiver(envelope.message)

    async def _on_control(self, msg: Msg) -> None:
        origin, _, payload = msg.data.partition(b"\n")
        if origin.decode("ascii", "replace") == self.worker_id:
            return
        channel = msg.subject.removeprefix(CONTROL_PREFIX)
        for handler in self._handlers.get(channel, ()):
            try:
                handler(payload)
            except Exception:
                log.exception("bus control handler for %r failed", channel)

    async def _disconnected(self) -> None:
        log.warning("bus disconnected from NATS", extra={"tether_code": "bus_disconnected"})

    async def _reconnected(self) -> None:
        url = self._nc.connected_url if self._nc is not None else None
        log.info(
            "bus reconnected to NATS (%s)",
            url.netloc if url is not None else "?",
            extra={"tether_code": "bus_reconnected"},
        )

    async def _error(self, exc: Exception) -> None:
        log.warning("bus error: %s", exc, extra={"tether_code": "bus_error"})
