"""Persistent sessions for the gateway's sessions, over a :class:`~.stores.SessionStore`.

A client that connects with Clean Start 0 and a Session Expiry (3.1.1: Clean Session 0,
which gets ``default_expiry``, one hour as in AWS IoT) keeps its session when it goes:

- its subscriptions are saved (expiry capped by ``StoreLimits.max_session_expiry``) and an
  :class:`OfflineSession` takes its place in the broker, queueing every QoS 1/2 message that
  matches a plain filter into the store (bounded there; QoS 0 is not queued: at most once);
- a delayed Will waits min(Will Delay Interval, Session Expiry) and is not published if the
  client comes back first (MQTT 5 3.1.3.2.2);
- on reconnect with Clean Start 0 the session resumes: Session Present 1, the filters are
  subscribed again (through the policy, as it is now) and the queue is delivered in order;
  Clean Start 1 deletes it. A session dropped administratively (revoked, disabled) is
  deleted, never resumed. At expiry it is deleted with its queue.
- an identity revoked or disabled while its client is away loses its stored session at once
  (:func:`discard_ended`, called by the registry feed after ``Gateway.drop_sessions`` with the
  same predicate): every session, held here as a stand-in or only in the store (parked by
  another worker, or before a restart), is matched on the identity it was made under: kind,
  name, certificate and CA fingerprints (:func:`stored_identity`; the store keeps them since
  migration 0011, and older rows match by name only).

Store calls run on one thread (``tether-sessions``) in order. Stored state survives a gateway
restart and is shared through the database; the offline stand-ins live in the process, so
messages published while no gateway holds one are not queued (``restore`` puts them back at
start). Across workers a session is handed over through the bus (:mod:`.handover`, wired by
``attach_bus``): the worker a client reconnects to reads the store only after the one that
held the session stopped its stand-in and committed its writes (bounded wait).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tether.cloud.gateway.broker import Broker, Message, Subscription
from tether.cloud.gateway.events import log_event
from tether.cloud.gateway.identity import Identity, IdentityKind
from tether.cloud.gateway.senders import is_view
from tether.cloud.gateway.stores import (
    SessionStore,
    StoredMessage,
    StoredOutgoing,
    StoredSession,
    StoredSubscription,
    StoreOutcome,
)
from tether.cloud.gateway.topics import is_shared_subscription

if TYPE_CHECKING:
    from tether.cloud.bus.base import Bus
    from tether.cloud.gateway.handover import Handover

T = TypeVar("T")
TAKEOVER_WAIT = 5.0  # seconds a resuming session waits for the one it took over to park
DEFAULT_EXPIRY = 3600  # 3.1.1 Clean Session 0 has no expiry of its own (AWS IoT: one hour)
MAX_EXPIRY = 7 * 24 * 3600  # AWS IoT's maximum; the store caps again (StoreLimits)


class Closable(Protocol):
    """A live session as the persistence sees it."""

    async def wait_closed(self, timeout: float) -> bool:
        """Wait until the session has ended."""
        ...


def _key(identity: Identity) -> tuple[str, str]:
    return identity.kind.value, identity.name


def stored(message: Message, qos: int) -> StoredMessage:
    """A message as the store keeps it, at the QoS it is to be delivered with."""
    return StoredMessage(
        topic=message.topic,
        payload=message.payload,
        qos=qos,
        sender_kind=message.sender.kind.value,
        sender_name=message.sender.name,
        user_properties=message.user_properties,
        expiry_interval=message.message_expiry_interval,
    )


class PersistentSessions:
    """The gateway's persistent sessions (see the module docstring)."""

    def __init__(
        self,
        store: SessionStore,
        *,
        default_expiry: int = DEFAULT_EXPIRY,
        max_expiry: int = MAX_EXPIRY,
    ) -> None:
        self.store = store
        self.default_expiry = default_expiry
        self.max_expiry = max_expiry
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-sessions")
        self._offline: dict[tuple[str, str], OfflineSession] = {}
        self._live: dict[tuple[str, str], Closable] = {}
        self.handover: Handover | None = None  # set by attach_bus when workers share a bus

    def attach_bus(self, bus: Bus) -> None:
        """Hand sessions between the workers of ``bus`` (call before ``restore`` and start)."""
        from tether.cloud.gateway.handover import Handover

        self.handover = Handover(self, bus)

    def stop_offline(self, key: tuple[str, str]) -> bool:
        """Stop this worker's stand-in for ``key``, if it has one (no Will, no queueing)."""
        offline = self._offline.pop(key, None)
        if offline is None:
            return False
        offline.stop()
        return True

    def is_live(self, key: tuple[str, str]) -> bool:
        """Whether a connected session of ``key`` is on this worker."""
        return key in self._live

    def parked_keys(self) -> list[tuple[str, str]]:
        """The sessions this worker holds a stand-in for."""
        return list(self._offline)

    def parked_at(self, key: tuple[str, str]) -> float | None:
        """When this worker parked its stand-in for ``key``; ``None`` if it holds none."""
        offline = self._offline.get(key)
        return None if offline is None else offline.parked_at

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call on the sessions thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue a store call without waiting (order is kept: one thread)."""
        self._thread.submit(fn, *args)

    async def begin(
        self, session: Closable, identity: Identity, *, clean: bool
    ) -> StoredSession | None:
        """A CONNECT was accepted: the stored session to resume, or ``None`` (deleted if clean).

        Waits for a session it took over to park first, and stops the offline stand-in; with
        other workers, waits (bounded) until the one that held the session released it.
        """
        key = _key(identity)
        if self.handover is not None:
            self.handover.connected(key)
        previous = self._live.get(key)
        self._live[key] = session
        if previous is not None and previous is not session:
            await previous.wait_closed(TAKEOVER_WAIT)
        self.stop_offline(key)  # back in time: no Will, no more queueing
        if self.handover is not None:
            await self.handover.wait_released(key)
        kind, name = key
        if clean:
            await self.call(self.store.delete_session, kind, name)
            return None
        return await self.call(self.store.load_session, kind, name)

    def forget(self, session: Closable, identity: Identity) -> None:
        """A session that keeps nothing ended: forget it as the live one."""
        key = _key(identity)
        if self._live.get(key) is session:
            del self._live[key]
            if self.handover is not None:
                self.handover.release(key)

    async def end(
        self,
        session: Closable,
        identity: Identity,
        broker: Broker,
        *,
        expiry: int,
        subscriptions: list[StoredSubscription],
        will: Message | None,
        will_delay: int,
        qos2_received: list[int] | None = None,
        outgoing: list[StoredOutgoing] | None = None,
        waiting: list[StoredMessage] | None = None,
        will_retain: bool = False,
    ) -> None:
        """The connection ended: park the session for ``expiry`` s, or delete it (expiry 0).

        ``outgoing`` (unacknowledged, resent first on resume) and ``waiting`` (never written:
        queued in the store ahead of what arrives while offline) keep what the client is owed.
        """
        key = _key(identity)
        if self._live.get(key) is session:
            del self._live[key]
        kind, name = key
        handover = self.handover
        if expiry <= 0:
            await self.call(self.store.delete_session, kind, name)
            if handover is not None:
                handover.release(key)
            return
        saved = await self.call(
            functools.partial(
                self.store.save_session,
                certificate_fingerprint=identity.certificate_fingerprint,
                issuer_fingerprint=identity.issuer_fingerprint,
            ),
            kind,
            name,
            expiry,
            subscriptions,
            qos2_received or [],
            outgoing or [],
        )
        for message in waiting or []:
            await self.call(self.store.enqueue, kind, name, message)
        # Asked after the writes: a claim may have come while they ran.
        if handover is not None and handover.claimed_away(key):
            handover.release(key)  # its client is on another worker now: saved, not parked
            return
        self.park(
            identity,
            broker,
            saved,
            will=will,
            will_delay=will_delay,
            expiry=expiry,
            will_retain=will_retain,
        )

    def park(
        self,
        identity: Identity,
        broker: Broker,
        saved: StoredSession,
        *,
        will: Message | None = None,
        will_delay: int = 0,
        expiry: int,
        will_retain: bool = False,
    ) -> None:
        """Put an offline stand-in for a saved session into the broker."""
        key = _key(identity)
        old = self._offline.pop(key, None)
        if old is not None:
            old.stop()
        offline = OfflineSession(self, identity, broker, saved)
        self._offline[key] = offline
        if self.handover is not None:
            self.handover.parked(key, offline.parked_at)
        loop = asyncio.get_running_loop()
        offline.timers.append(loop.call_later(expiry, self._expire, key, offline))
        if will is not None:
            offline.timers.append(
                loop.call_later(min(will_delay, expiry), offline.publish_will, will, will_retain)
            )

    async def restore(self, broker: Broker) -> int:
        """At gateway start: stand-ins for the stored sessions whose clients are away.

        Returns how many were restored.
        """
        now = datetime.now(UTC)
        restored = 0
        for saved in await self.call(self.store.list_sessions):
            key = (saved.kind, saved.name)
            remaining = int((saved.expires_at - now).total_seconds())
            if remaining <= 0 or key in self._offline or key in self._live:
                continue
            self.park(stored_identity(saved), broker, saved, expiry=remaining)
            restored += 1
        return restored

    async def discard(self, ended: Callable[[Identity], bool], *, reason: str) -> int:
        """Delete the stored sessions of identities a registry change ended; how many.

        Live sessions are not touched here (``Gateway.drop_sessions`` ends them, and an
        administrative drop deletes their session): this is for clients that are away.
        """
        gone = [key for key, offline in self._offline.items() if ended(offline.identity)]
        for key in gone:
            self._offline.pop(key).stop()
            if self.handover is not None:
                self.handover.release(key)
        for saved in await self.call(self.store.list_sessions):
            key = (saved.kind, saved.name)
            if key in gone or key in self._live:
                continue
            if ended(stored_identity(saved)):
                gone.append(key)
        for kind, name in gone:
            await self.call(self.store.delete_session, kind, name)
            log_event(
                logging.WARNING,
                "session_discarded",
                f"stored session deleted: {reason}",
                peer="-",
                identity=name,
            )
        return len(gone)

    def _expire(self, key: tuple[str, str], offline: OfflineSession) -> None:
        if self._offline.get(key) is offline:
            del self._offline[key]
            offline.stop()
            self.submit(self.store.delete_session, *key)
            if self.handover is not None:
                self.handover.release(key)

    def close(self) -> None:
        """Stop the stand-ins' timers and the thread (pending calls finish first)."""
        for offline in self._offline.values():
            offline.stop()
        self._offline.clear()
        self._thread.shutdown(wait=True)


def stored_identity(saved: StoredSession) -> Identity:
    """The identity a stored session was made under, as far as the store keeps it.

    Kind, name and the certificate and CA fingerprints (migration 0011): enough for every
    registry change that ends sessions (revocation, disable, CA deactivation, rebinding) to
    find a session whose client is away. Sessions stored before 0011 carry no fingerprints
    and are matched by name only.
    """
    return Identity(
        IdentityKind(saved.kind),
        saved.name,
        saved.certificate_fingerprint,
        "",
        issuer_fingerprint=saved.issuer_fingerprint,
    )


async def discard_ended(broker: Broker, ended: Callable[[Identity], bool], *, reason: str) -> int:
    """The registry feed's hook: a revoked or disabled identity's stored session goes now.

    Call it right after ``Gateway.drop_sessions`` with the same predicate (the live sessions
    are dropped first, so none is parked after this ran); 0 when the gateway keeps none.
    """
    if broker.sessions is None:
        return 0
    return await broker.sessions.discard(ended, reason=reason)


def delivered(message: StoredMessage) -> Message:
    """A queued message as the session delivers it, attributed as it was when published."""
    sender = Identity(IdentityKind(message.sender_kind), message.sender_name, "", "")
    return Message(
        topic=message.topic,
        payload=message.payload,
        qos=message.qos,
        sender=sender,
        user_properties=message.user_properties,
        message_expiry_interval=message.expiry_interval,  # what remains (the store counts)
    )


class OfflineSession:
    """Stands in the broker for a persistent session whose client is away: queues for it."""

    def __init__(
        self, owner: PersistentSessions, identity: Identity, broker: Broker, saved: StoredSession
    ) -> None:
        self._owner = owner
        self._identity = identity
        self.identity = identity  # as it connected last (what a registry change is matched on)
        self._broker = broker
        self.timers: list[asyncio.TimerHandle] = []
        self.parked_at = time.time()  # which of two stand-ins is newer (gateway/handover.py)
        self._tasks: set[asyncio.Task[object]] = set()
        for subscription in saved.subscriptions:
            if not is_view(subscription.topic_filter) and not is_shared_subscription(
                subscription.topic_filter
            ):
                broker.subscribe(
                    self, Subscription(subscription.topic_filter, subscription.max_qos)
                )

    def deliver(self, message: Message, qos: int) -> bool:
        """Queue a QoS 1/2 message in the store (QoS 0 is not kept for an absent client)."""
        if qos == 0:
            return True
        kind, name = _key(self._identity)
        self._owner.submit(self._enqueue, kind, name, stored(message, qos))
        return True

    def _enqueue(self, kind: str, name: str, message: StoredMessage) -> None:
        outcome = self._owner.store.enqueue(kind, name, message)
        if outcome in (StoreOutcome.OVER_COUNT, StoreOutcome.OVER_BYTES):
            log_event(
                logging.WARNING,
                "session_queue_full",
                f"offline session queue full ({outcome.value}): the newest message is refused",
                peer="-",
                identity=name,
            )

    def publish_will(self, will: Message, retain: bool = False) -> None:
        """The Will Delay passed without a reconnect: publish the Will (and retain it if its
        Will Retain flag was set, as an undelayed Will is)."""
        self._broker.publish(will)
        retained = self._broker.retained
        if retain and retained is not None:
            task = asyncio.get_running_loop().create_task(retained.store(will))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def stop(self) -> None:
        """Leave the broker and cancel the timers."""
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        self._broker.remove(self)
