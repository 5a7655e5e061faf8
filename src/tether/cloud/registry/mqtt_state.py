"""The registry-backed session and retained-message stores of the gateway (issue 17).

Implements :class:`tether.cloud.gateway.stores.RetainedStore` and
:class:`~tether.cloud.gateway.stores.SessionStore` on the registry's database (migration
0007), so the state survives a restart and every worker and host that opens the registry
sees the same. It shares the registry's engine, clock and transactions but is not one of its
aggregates: message state changes at message rates and writes no audit rows (it is not an
administrative action). Open it with :meth:`RegistryMqttState.on`.

Retained lookups select by the filter's literal prefix (the levels before its first
wildcard) and match the rest with :func:`tether.cloud.gateway.topics.matches`, the one
reading of a filter the broker uses too. Bounds come from ``StoreLimits`` (module docstring of
``cloud/gateway/stores.py``); every write is one transaction, so a bound is checked and the
row written atomically (``BEGIN IMMEDIATE`` on SQLite).

Message Expiry (MQTT 5 3.3.2.3.3, migration 0010): a retained or queued message keeps the
interval it was published with; read back, it carries what remains (whole seconds, rounded
up) and one whose interval has passed is not returned: a queued one is deleted as it is
taken, an expired retained one is skipped by lookups and deleted when its topic is next set
(until then it still counts against its sender's bounds).

The outgoing messages a session owes its client (unacknowledged QoS 1/2, resent on resume)
share the ``qos2_received`` column, a JSON text: a list (identifiers only, as migration 0007
wrote it) or ``{"received": [...], "outgoing": [[id, message or null], ...]}`` with the
payload in base64. No migration: the column is text, old rows still read, and the size is
bounded by the client's Receive Maximum times the gateway's maximum packet size.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from tether.cloud.gateway.stores import (
    StoredMessage,
    StoredOutgoing,
    StoredSession,
    StoredSubscription,
    StoreLimits,
    StoreOutcome,
)
from tether.cloud.gateway.topics import matches
from tether.cloud.registry.base import RegistryBase
from tether.cloud.registry.models import MqttQueuedModel, MqttSessionModel, RetainedMessageModel
from tether.cloud.registry.registry import Registry


def _properties(message: StoredMessage) -> str:
    return json.dumps([list(item) for item in message.user_properties])


def _remaining(row: RetainedMessageModel | MqttQueuedModel, now: datetime) -> int | None:
    """Seconds left of the row's Message Expiry Interval (<= 0: expired), None for none."""
    if row.expiry_interval is None:
        return None
    since = row.stored_at if isinstance(row, RetainedMessageModel) else row.queued_at
    return row.expiry_interval - math.floor((now - since).total_seconds())


def _message(row: RetainedMessageModel | MqttQueuedModel, remaining: int | None) -> StoredMessage:
    return StoredMessage(
        expiry_interval=remaining,
        topic=row.topic,
        payload=row.payload,
        qos=row.qos,
        sender_kind=row.sender_kind,
        sender_name=row.sender_name,
        user_properties=tuple((str(k), str(v)) for k, v in json.loads(row.user_properties)),
    )


def _size(message: StoredMessage) -> int:
    return len(message.topic.encode()) + len(message.payload)


def _session(row: MqttSessionModel) -> StoredSession:
    subscriptions = tuple(
        StoredSubscription(str(f), int(q), bool(n), None if i is None else int(i))
        for f, q, n, i in json.loads(row.subscriptions)
    )
    held = json.loads(row.qos2_received)
    if isinstance(held, list):  # as migration 0007 wrote it: identifiers only
        held = {"received": held, "outgoing": []}
    received = tuple(int(packet_id) for packet_id in held["received"])
    outgoing = tuple(
        StoredOutgoing(int(packet_id), None if item is None else _decode_message(item))
        for packet_id, item in held["outgoing"]
    )
    return StoredSession(
        row.kind,
        row.name,
        row.expires_at,
        subscriptions,
        received,
        outgoing,
        row.certificate_fingerprint or "",
        row.issuer_fingerprint or "",
    )


def _encode_message(message: StoredMessage) -> list[object]:
    return [message.topic, base64.b64encode(message.payload).decode(), message.qos,
            message.sender_kind, message.sender_name,
            [list(item) for item in message.user_properties]]  # fmt: skip


def _decode_message(item: list) -> StoredMessage:
    topic, payload, qos, kind, name, properties = item
    return StoredMessage(
        str(topic), base64.b64decode(payload), int(qos), str(kind), str(name),
        tuple((str(k), str(v)) for k, v in properties),
    )  # fmt: skip


def _encode_held(received: Sequence[int], outgoing: Sequence[StoredOutgoing]) -> str:
    if not outgoing:
        return json.dumps(sorted(received))
    return json.dumps({
        "received": sorted(received),
        "outgoing": [[o.packet_id, None if o.message is None else _encode_message(o.message)]
                     for o in outgoing],
    })  # fmt: skip


def literal_prefix(topic_filter: str) -> str:
    """The levels of a filter before its first wildcard, without the trailing '/'.

    A loose prefix on purpose: ``a/#`` also matches the topic ``a`` (spec 4.7.1.2), and
    :func:`matches` removes what the prefix lets through (``ab`` for ``a/#``).
    """
    levels = []
    for level in topic_filter.split("/"):
        if level in ("+", "#"):
            break
        levels.append(level)
    return "/".join(levels)


class RegistryMqttState(RegistryBase):
    """Retained messages and persistent sessions in the registry's database."""

    def __init__(self, registry: Registry, limits: StoreLimits) -> None:
        super().__init__(registry._engine, display_url=registry.url)
        self._clock = registry._clock
        self.limits = limits

    @classmethod
    def on(cls, registry: Registry, limits: StoreLimits | None = None) -> RegistryMqttState:
        """The stores on an open registry (its engine, its clock)."""
        return cls(registry, limits or StoreLimits())

    # -- retained ------------------------------------------------------------------------------

    def set_retained(self, message: StoredMessage) -> StoreOutcome:
        """Store, replace or (empty payload) clear the topic's retained message."""
        key = hashlib.sha256(message.topic.encode()).hexdigest()
        with self._write() as session:
            row = session.scalars(
                select(RetainedMessageModel).where(RetainedMessageModel.topic_hash == key)
            ).first()
            if not message.payload:
                if row is not None:
                    session.delete(row)
                return StoreOutcome.CLEARED
            outcome = self._retained_room(session, message, row)
            if outcome is not StoreOutcome.STORED:
                return outcome
            if row is None:
                row = RetainedMessageModel(topic_hash=key, topic=message.topic)
                session.add(row)
            row.payload = message.payload
            row.qos = message.qos
            row.sender_kind = message.sender_kind
            row.sender_name = message.sender_name
            row.user_properties = _properties(message)
            row.size = _size(message)
            row.stored_at = self._clock()
            row.expiry_interval = message.expiry_interval
        return StoreOutcome.STORED

    def _retained_room(
        self, session: Session, message: StoredMessage, replacing: RetainedMessageModel | None
    ) -> StoreOutcome:
        """Whether the sender's bounds leave room (a replaced message of its own is freed)."""
        count, size = session.execute(
            select(func.count(), func.coalesce(func.sum(RetainedMessageModel.size), 0)).where(
                RetainedMessageModel.sender_name == message.sender_name,
                RetainedMessageModel.sender_kind == message.sender_kind,
            )
        ).one()
        if (
            replacing is not None
            and replacing.sender_name == message.sender_name
            and replacing.sender_kind == message.sender_kind
        ):
            count -= 1
            size -= replacing.size
        if count + 1 > self.limits.max_retained_per_identity:
            return StoreOutcome.OVER_COUNT
        if size + _size(message) > self.limits.max_retained_bytes_per_identity:
            return StoreOutcome.OVER_BYTES
        return StoreOutcome.STORED

    def retained_matching(self, topic_filter: str, limit: int) -> list[StoredMessage]:
        """Retained messages whose topic matches the filter, oldest first, at most ``limit``."""
        prefix = literal_prefix(topic_filter)
        query = select(RetainedMessageModel).order_by(RetainedMessageModel.id)
        if prefix:
            query = query.where(func.substr(RetainedMessageModel.topic, 1, len(prefix)) == prefix)
        found: list[StoredMessage] = []
        now = self._clock()
        with self._read() as session:
            for row in session.scalars(query):
                remaining = _remaining(row, now)
                if remaining is not None and remaining <= 0:
                    continue  # expired: not delivered (MQTT 5 3.3.2.3.3)
                if matches(topic_filter, row.topic):
                    found.append(_message(row, remaining))
                    if len(found) >= limit:
                        break
        return found

    # -- sessions ------------------------------------------------------------------------------

    def save_session(
        self,
        kind: str,
        name: str,
        expiry: int,
        subscriptions: Sequence[StoredSubscription],
        qos2_received: Sequence[int] = (),
        outgoing: Sequence[StoredOutgoing] = (),
        *,
        certificate_fingerprint: str = "",
        issuer_fingerprint: str = "",
    ) -> StoredSession:
        """Keep the session for min(expiry, max_session_expiry) seconds from now."""
        expires_at = self._clock() + timedelta(
            seconds=max(0, min(expiry, self.limits.max_session_expiry))
        )
        encoded = json.dumps(
            [[s.topic_filter, s.max_qos, s.no_local, s.subscription_id] for s in subscriptions]
        )
        with self._write() as session:
            row = self._session_row(session, kind, name)
            if row is None:
                row = MqttSessionModel(kind=kind, name=name)
                session.add(row)
            row.expires_at = expires_at
            row.subscriptions = encoded
            row.qos2_received = _encode_held(qos2_received, outgoing)
            row.certificate_fingerprint = certificate_fingerprint or None
            row.issuer_fingerprint = issuer_fingerprint or None
        return StoredSession(
            kind,
            name,
            expires_at,
            tuple(subscriptions),
            tuple(sorted(qos2_received)),
            tuple(outgoing),
            certificate_fingerprint,
            issuer_fingerprint,
        )

    def load_session(self, kind: str, name: str) -> StoredSession | None:
        """The live session, or ``None`` (an expired one is deleted with its queue)."""
        with self._write() as session:
            row = self._session_row(session, kind, name)
            if row is None:
                return None
            if row.expires_at <= self._clock():
                self._drop(session, row)
                return None
            return _session(row)

    def list_sessions(self) -> list[StoredSession]:
        """Every session that has not expired, in the order they were first saved."""
        with self._read() as session:
            rows = session.scalars(
                select(MqttSessionModel)
                .where(MqttSessionModel.expires_at > self._clock())
                .order_by(MqttSessionModel.id)
            )
            return [_session(row) for row in rows]

    def delete_session(self, kind: str, name: str) -> bool:
        """Delete the session and everything queued for it.

        Every Clean Start connect asks this, and almost always nothing is stored: a read
        answers that without a write transaction (on SQLite a write takes the database lock
        and a journal sync; the connect profile had this at 11% of the gateway's CPU). A row
        stored between the read and a connect's next step is the same race the write had.
        """
        with self._read() as session:
            if self._session_row_id(session, kind, name) is None:
                return False
        with self._write() as session:
            row = self._session_row(session, kind, name)
            if row is None:
                return False
            self._drop(session, row)
            return True

    def enqueue(self, kind: str, name: str, message: StoredMessage) -> StoreOutcome:
        """Queue for an offline session; overflow refuses the newest (see ``stores``)."""
        with self._write() as session:
            row = self._session_row(session, kind, name)
            if row is None or row.expires_at <= self._clock():
                return StoreOutcome.NO_SESSION
            count, size = session.execute(
                select(func.count(), func.coalesce(func.sum(MqttQueuedModel.size), 0)).where(
                    MqttQueuedModel.session_id == row.id
                )
            ).one()
            if count + 1 > self.limits.max_queued_per_session:
                return StoreOutcome.OVER_COUNT
            if size + _size(message) > self.limits.max_queued_bytes_per_session:
                return StoreOutcome.OVER_BYTES
            session.add(
                MqttQueuedModel(
                    session_id=row.id,
                    topic=message.topic,
                    payload=message.payload,
                    qos=message.qos,
                    sender_kind=message.sender_kind,
                    sender_name=message.sender_name,
                    user_properties=_properties(message),
                    size=_size(message),
                    queued_at=self._clock(),
                    expiry_interval=message.expiry_interval,
                )
            )
        return StoreOutcome.STORED

    def take_queued(self, kind: str, name: str, limit: int) -> list[StoredMessage]:
        """Remove and return the oldest queued messages, in order."""
        with self._write() as session:
            row = self._session_row(session, kind, name)
            if row is None:
                return []
            now = self._clock()
            taken: list[StoredMessage] = []
            while len(taken) < limit:  # expired ones are deleted and do not count
                want = limit - len(taken)
                rows = list(
                    session.scalars(
                        select(MqttQueuedModel)
                        .where(MqttQueuedModel.session_id == row.id)
                        .order_by(MqttQueuedModel.id)
                        .limit(want)
                    )
                )
                for queued in rows:
                    session.delete(queued)
                    remaining = _remaining(queued, now)
                    if remaining is None or remaining > 0:
                        taken.append(_message(queued, remaining))
                session.flush()
                if len(rows) < want:
                    break
            return taken

    def _session_row_id(self, session: Session, kind: str, name: str) -> int | None:
        return session.scalar(
            select(MqttSessionModel.id).where(
                MqttSessionModel.kind == kind, MqttSessionModel.name == name
            )
        )

    def _session_row(self, session: Session, kind: str, name: str) -> MqttSessionModel | None:
        return session.scalars(
            select(MqttSessionModel).where(
                MqttSessionModel.kind == kind, MqttSessionModel.name == name
            )
        ).first()

    def _drop(self, session: Session, row: MqttSessionModel) -> None:
        # Explicit, not only ON DELETE CASCADE: correct whatever the foreign-key pragma.
        session.execute(delete(MqttQueuedModel).where(MqttQueuedModel.session_id == row.id))
        session.delete(row)
