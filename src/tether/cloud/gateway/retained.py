"""Retained messages for the gateway's sessions, over a :class:`~.stores.RetainedStore`.

The store is sync (the registry-backed one writes to the database), so every call runs on
one thread of its own (``tether-retained``): one thread keeps the writes in the order the
PUBLISH packets arrived (set, then clear, stays set-then-clear), and nothing blocks the
event loop. A session awaits the write before it reads the next packet, so its PUBACKs stay
in order [MQTT-4.6.0-2] and a client that floods retained messages is paced by the store.

What is stored is what was routed: the topic, the payload, the QoS, the sender's identity
and the attributed user properties (``tether-sender`` included) and the Message Expiry
Interval (delivered decremented, dropped once passed: ``cloud/registry/mqtt_state.py``);
other MQTT 5 properties are not kept. A retained message is delivered after SUBACK to a new
subscription whose filter (already checked against the subscriber's policy) matches it, at most
``max_retained_per_subscribe`` per filter, with the RETAIN flag set.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from tether.cloud.gateway.broker import Message, Subscriber
from tether.cloud.gateway.events import log_event
from tether.cloud.gateway.identity import Identity, IdentityKind
from tether.cloud.gateway.stores import RetainedStore, StoredMessage, StoreOutcome


class RetainedMessages:
    """The gateway's retained messages: a store and the one thread that talks to it."""

    def __init__(self, store: RetainedStore) -> None:
        self._store = store
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-retained")

    async def store(self, message: Message) -> StoreOutcome:
        """Set, replace or (empty payload) clear the retained message of ``message.topic``."""
        stored = StoredMessage(
            topic=message.topic,
            payload=message.payload,
            qos=message.qos,
            sender_kind=message.sender.kind.value,
            sender_name=message.sender.name,
            user_properties=message.user_properties,
            expiry_interval=message.message_expiry_interval,
        )
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(self._thread, self._store.set_retained, stored)
        if outcome in (StoreOutcome.OVER_COUNT, StoreOutcome.OVER_BYTES):
            log_event(
                logging.WARNING,
                "retained_quota_exceeded",
                f"retained message for {message.topic!r} refused ({outcome.value}); the "
                "message was still delivered to the live subscribers",
                peer="-",
                identity=message.sender.name,
            )
        return outcome

    async def matching(self, topic_filter: str, limit: int) -> list[Message]:
        """The retained messages for a new subscription to ``topic_filter``, RETAIN set."""
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(
            self._thread, self._store.retained_matching, topic_filter, limit
        )
        return [_message(stored) for stored in found]

    async def send(
        self,
        due: list[tuple[Subscriber, str, int]],
        *,
        limit: int,
        closing: Callable[[], bool],
        peer: str,
    ) -> None:
        """Deliver to each (subscriber, filter, granted QoS) its retained messages, in order.

        A store that fails leaves the subscriptions standing (logged, nothing delivered).
        """
        for target, topic_filter, granted in due:
            try:
                found = await self.matching(topic_filter, limit)
            except Exception as exc:
                log_event(
                    logging.WARNING,
                    "retained_unavailable",
                    f"retained lookup for {topic_filter!r} failed: {exc}",
                    peer=peer,
                )
                return
            for message in found:
                if closing():
                    return
                target.deliver(message, min(message.qos, granted))

    def close(self) -> None:
        """Stop the thread (pending calls finish first)."""
        self._thread.shutdown(wait=True)


def _message(stored: StoredMessage) -> Message:
    sender = Identity(
        kind=IdentityKind(stored.sender_kind),
        name=stored.sender_name,
        certificate_fingerprint="",  # not kept: the sender may have another certificate now
        issuer="",
    )
    message = Message(
        topic=stored.topic,
        payload=stored.payload,
        qos=stored.qos,
        sender=sender,
        user_properties=stored.user_properties,
        message_expiry_interval=stored.expiry_interval,  # what remains (the store counts)
    )
    return replace(message, retain=True)
