"""The part of a session that outlives or precedes its connection: stored and retained state.

A mixin of :class:`~tether.cloud.gateway.session.Session` (split out to keep the session loop
readable): the retained messages a new subscription is owed (:mod:`.retained`), resuming a
stored session after CONNACK and parking or deleting it at the end (:mod:`.persistence`),
and the Will, which a persistent session may delay. Both stores hang off the broker
(``Broker.retained``, ``Broker.sessions``); ``None`` means the gateway keeps no such state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from tether.cloud.gateway.broker import Broker, Message
from tether.cloud.gateway.exactly_once import ExactlyOnce
from tether.cloud.gateway.identity import Identity
from tether.cloud.gateway.outbox import Outbox
from tether.cloud.gateway.persistence import PersistentSessions, delivered, stored
from tether.cloud.gateway.reserved import ReservedTopics
from tether.cloud.gateway.retained import RetainedMessages
from tether.cloud.gateway.settings import GatewaySettings
from tether.cloud.gateway.stores import (
    StoredMessage,
    StoredOutgoing,
    StoredSession,
    StoredSubscription,
)
from tether.cloud.gateway.subscriptions import SessionSubscriptions, SubscribeRequest

if TYPE_CHECKING:
    from tether.cloud.gateway.session import Session

QUEUE_BATCH = 100  # queued messages taken from the store at a time on resume


class SessionState:
    """Stored and retained state of one session (see the module docstring)."""

    # Set by Session.__init__ / accept.
    identity: Identity
    peer: str
    settings: GatewaySettings
    subscriptions: SessionSubscriptions
    _broker: Broker
    _closing: bool
    _connected: bool
    _discard: bool
    _expiry: int
    _publish_will: bool
    _resumed: StoredSession | None
    _retained_tasks: set[asyncio.Task[None]]
    _will: Message | None
    _will_delay: int
    _will_retain: bool
    _outbox: Outbox
    exactly_once: ExactlyOnce

    @property
    def sessions(self) -> PersistentSessions | None:
        """The gateway's persistent sessions, or ``None`` if it keeps none."""
        return self._broker.sessions

    @property
    def retained(self) -> RetainedMessages | None:
        """The gateway's retained messages, or ``None`` if it offers none (Retain Available 0)."""
        return self._broker.retained

    @property
    def reserved(self) -> ReservedTopics | None:
        """The handler of ``$tether/...`` requests (enrollment), or ``None`` if none is attached."""
        return self._broker.reserved

    def send_retained(self) -> None:
        """After SUBACK: deliver the retained messages the new subscriptions are owed."""
        retained = self.retained
        due = self.subscriptions.retained_due()
        if retained is None or not due:
            return
        task = asyncio.get_running_loop().create_task(
            retained.send(
                due,
                limit=self.settings.max_retained_per_subscribe,
                closing=lambda: self._closing,
                peer=self.peer,
            )
        )
        self._retained_tasks.add(task)
        task.add_done_callback(self._retained_tasks.discard)

    async def _finish(self, snapshot: list[StoredSubscription]) -> None:
        """The end of the connection: the Will, then the session parked or deleted.

        A persistent session's Will waits min(Will Delay, Session Expiry) in the offline
        stand-in (:mod:`.persistence`); any other Will is published now.
        """
        will = self._will if self._connected and self._publish_will else None
        if will is not None:
            # Checked again now: the policy may have changed since CONNECT (or withdrawn connect).
            refusal = self._session().publish_refusal(will.topic, will.response_topic)
            if refusal is not None:
                self._session().log(
                    logging.WARNING, refusal[0], f"Will not published: {refusal[1]}"
                )
                will = None
        persistence = self.sessions
        parked = persistence is not None and self._connected and (self._expiry or self._discard)
        delay = self._will_delay if parked and not self._discard else 0
        if will is not None and not delay:
            self._session().route(will)
            if self._will_retain and self.retained is not None:
                with contextlib.suppress(Exception):
                    await self.retained.store(will)
        if persistence is None or not self._connected:
            return
        if not parked:
            persistence.forget(self._session(), self.identity)
            return
        in_flight, waiting = self._outbox.owed()
        outgoing = [
            StoredOutgoing(packet_id, None if pubrel_sent else stored(*tag))  # type: ignore[misc]
            for packet_id, tag, pubrel_sent in in_flight
        ]
        queued: list[StoredMessage] = [stored(*tag) for tag in waiting]  # type: ignore[misc]
        try:
            await persistence.end(
                self._session(),
                self.identity,
                self._broker,
                expiry=0 if self._discard else self._expiry,
                subscriptions=snapshot,
                will=will if delay else None,
                will_delay=delay,
                qos2_received=self.exactly_once.snapshot(),
                outgoing=outgoing,
                waiting=queued,
                will_retain=self._will_retain,
            )
        except Exception as exc:  # the store is down: the session is lost, and said so
            self._session().log(
                logging.WARNING, "session_store_unavailable", f"session not kept: {exc}"
            )

    async def _resume(self) -> None:
        """After CONNACK with Session Present 1: what was in flight, the filters, the queue.

        Unacknowledged outgoing QoS 1/2 PUBLISH packets go again with DUP=1 under their
        identifiers, and PUBREL where PUBREC had come, before anything new (MQTT 5 4.4).
        """
        resumed, persistence = self._resumed, self.sessions
        if resumed is None or persistence is None:
            return
        self.exactly_once.restore(resumed.qos2_received)
        protocol = self._session()._protocol
        for owed in resumed.outgoing:
            if owed.message is None or protocol is None:
                self._outbox.resend(owed.packet_id, None, None)
                continue
            message = delivered(owed.message)
            data = protocol.encode_publish(message, owed.message.qos)
            self._outbox.resend(owed.packet_id, data, (message, owed.message.qos))
            protocol.written(message)
        for held in resumed.subscriptions:  # through the policy as it is now
            request = SubscribeRequest(held.topic_filter, held.max_qos, held.no_local, 2)
            self.subscriptions.subscribe([request], held.subscription_id)
        kind, name = self.identity.kind.value, self.identity.name
        while not self._closing:
            queued = await persistence.call(persistence.store.take_queued, kind, name, QUEUE_BATCH)
            for message in queued:
                self._session().deliver(delivered(message), message.qos)
            if len(queued) < QUEUE_BATCH:
                return

    def _session(self) -> Session:
        return self  # type: ignore[return-value]  # the mixin is only ever a Session
