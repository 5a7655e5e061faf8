"""One session's subscriptions: SUBSCRIBE filter by filter, each with its SUBACK code.

Per filter, in this order: 0x8F Topic Filter invalid, 0x87 Not authorized (a shared
subscription from a device, :mod:`tether.cloud.gateway.shared`; the policy, on the filter
inside a ``$sender`` view or a ``$share`` group), then the quotas:

- only the first ``max_filters_per_subscribe`` filters of one SUBSCRIBE are considered; every
  filter after them gets 0x97 Quota exceeded without being looked at (the packet itself is
  bounded by the maximum packet size);
- a session holds at most ``max_subscriptions_per_session`` filters: a new filter beyond
  that gets 0x97 (re-subscribing to a filter it holds only replaces it and is allowed).

A quota answers in SUBACK and the session stays: the spec gives SUBACK a reason code per
filter precisely so a server can refuse one without dropping the connection. The session then
reads its next packet only after ``quota_backoff`` (1 s): a client that keeps sending
SUBSCRIBE over its quota gets one packet a second of the gateway's time, not all of it.

The table also keeps what the broker does not need to know: the subscription identifier of
each filter (MQTT 5 section 3.8.2.1.2: a delivered PUBLISH carries the identifiers of every
subscription it matched), and the ``$sender`` views (:mod:`tether.cloud.gateway.senders`),
each registered with the broker as its own subscriber. Both protocol versions use it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from mqtt5 import SubAckReasonCode

from tether.cloud.gateway import shared
from tether.cloud.gateway.broker import Broker, Message, Subscriber, Subscription
from tether.cloud.gateway.events import log_event
from tether.cloud.gateway.identity import Identity, IdentityKind
from tether.cloud.gateway.limits import LimitCode, LimitCounters
from tether.cloud.gateway.policy import TopicPolicy
from tether.cloud.gateway.senders import ViewSubscriber, is_view, parse_view
from tether.cloud.gateway.settings import GatewaySettings
from tether.cloud.gateway.shared import SharedGroup, parse_shared
from tether.cloud.gateway.stores import StoredSubscription
from tether.cloud.gateway.topics import is_shared_subscription, is_valid_topic_filter, matches

MAX_QOS = 2


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    """One filter of a SUBSCRIBE, whatever the protocol version."""

    pattern: str
    max_qos: int
    no_local: bool = False
    retain_handling: int = 0  # MQTT 5: 0 send retained, 1 only for a new filter, 2 never
    retain_as_published: bool = False  # MQTT 5: forward live RETAIN as the publisher set it


@dataclass(frozen=True, slots=True)
class _Held:
    granted: int
    subscription_id: int | None
    view: ViewSubscriber | None
    no_local: bool = False
    group: SharedGroup | None = None
    retain_as_published: bool = False

    def matches(self, pattern: str, topic: str) -> bool:
        """Whether this held filter matches a delivered topic (a shared one by its filter)."""
        return matches(self.group.key.inner if self.group is not None else pattern, topic)


class SessionSubscriptions:
    """The filters one session holds, in the broker and with their identifiers and views."""

    def __init__(
        self,
        subscriber: Subscriber,
        *,
        identity: Identity,
        peer: str,
        broker: Broker,
        policy: TopicPolicy,
        settings: GatewaySettings,
        counters: LimitCounters,
    ) -> None:
        self._subscriber = subscriber
        self._identity = identity
        self._peer = peer
        self._broker = broker
        self._policy = policy
        self._settings = settings
        self._counters = counters
        self._held: dict[str, _Held] = {}
        self._retained_due: list[tuple[Subscriber, str, int]] = []
        self._with_ids = 0  # how many held filters carry a subscription identifier
        self._with_rap = 0  # how many held filters have Retain As Published

    def __len__(self) -> int:
        return len(self._held)

    def subscribe(
        self, requests: Sequence[SubscribeRequest], subscription_id: int | None = None
    ) -> list[SubAckReasonCode]:
        """Apply one SUBSCRIBE; the SUBACK reason code of each filter, in order."""
        settings = self._settings
        considered = requests[: settings.max_filters_per_subscribe]
        codes = [self._one(request, subscription_id) for request in considered]
        over = len(requests) - len(considered)
        if over > 0:
            self._counters.hit(
                LimitCode.SUBSCRIBE_FILTERS,
                f"SUBSCRIBE with {len(requests)} filters: the {over} beyond "
                f"max_filters_per_subscribe={settings.max_filters_per_subscribe} got 0x97",
                peer=self._peer,
                identity=self._identity.name,
            )
            codes.extend([SubAckReasonCode.QUOTA_EXCEEDED] * over)
        return codes

    def snapshot(self) -> list[StoredSubscription]:
        """The held filters as a persistent session stores them."""
        return [
            StoredSubscription(pattern, held.granted, held.no_local, held.subscription_id)
            for pattern, held in self._held.items()
        ]

    def retained_due(self) -> list[tuple[Subscriber, str, int]]:
        """(subscriber, filter, granted QoS) owed retained messages by the last SUBSCRIBE.

        The subscriber is the session or a ``$sender`` view (which rewrites the topic); the
        filter is the one the broker matches. Taken once: the list is emptied.
        """
        due, self._retained_due = self._retained_due, []
        return due

    def unsubscribe(self, pattern: str) -> bool:
        """Remove a filter; ``True`` if the session held it."""
        held = self._held.pop(pattern, None)
        if held is None:
            return False
        if held.subscription_id is not None:
            self._with_ids -= 1
        if held.retain_as_published:
            self._with_rap -= 1
        if held.view is not None:
            self._broker.remove(held.view)
        elif held.group is not None:
            shared.leave(self._broker, held.group, self._subscriber)
        else:
            self._broker.unsubscribe(self._subscriber, pattern)
        return True

    def clear(self) -> None:
        """Forget every filter (the session ended)."""
        for held in self._held.values():
            if held.view is not None:
                self._broker.remove(held.view)
            elif held.group is not None:
                shared.leave(self._broker, held.group, self._subscriber)
        self._held.clear()
        self._with_ids = 0
        self._with_rap = 0
        self._broker.remove(self._subscriber)

    def remove_refused(self) -> list[tuple[str, str]]:
        """Remove every held filter the policy refuses now; ``(filter, why)`` of each removed.

        Called after a policy change (``cloud/policy/live.py``). A ``$sender`` view and a
        shared subscription are judged by the filter the broker matches for them, as at
        SUBSCRIBE, so neither outlives the right to read what it delivers.
        """
        removed: list[tuple[str, str]] = []
        for pattern, held in list(self._held.items()):
            inner = (
                held.view.view.inner
                if held.view is not None
                else held.group.key.inner
                if held.group is not None
                else pattern
            )
            if self._policy.may_subscribe(self._identity, inner):
                continue
            removed.append((pattern, self._policy.explain(self._identity, "subscribe", inner)))
            self.unsubscribe(pattern)
        return removed

    def as_forwarded(self, message: Message) -> Message:
        """``message`` as this session forwards it: RETAIN 1 for a live message published
        retained only if a held filter matching its topic has Retain As Published (3.3.1.3)."""
        if not message.published_retained or message.retain or not self._with_rap:
            return message
        if any(
            held.retain_as_published and held.matches(pattern, message.topic)
            for pattern, held in self._held.items()
        ):
            return replace(message, retain=True)
        return message

    def subscription_ids(self, topic: str) -> list[int]:
        """The identifiers of the held filters that match ``topic`` (delivered topic)."""
        if not self._with_ids:
            return []
        return sorted(
            held.subscription_id
            for pattern, held in self._held.items()
            if held.subscription_id is not None and held.matches(pattern, topic)
        )

    def _one(self, request: SubscribeRequest, subscription_id: int | None) -> SubAckReasonCode:
        pattern = request.pattern
        view = parse_view(pattern) if is_view(pattern) else None
        if not is_valid_topic_filter(pattern) or (is_view(pattern) and view is None):
            self._refused("mqtt_topic_filter_invalid", pattern, "not a valid topic filter")
            return SubAckReasonCode.TOPIC_FILTER_INVALID
        share = parse_shared(pattern) if is_shared_subscription(pattern) else None
        if is_shared_subscription(pattern) and share is None:
            self._refused("mqtt_topic_filter_invalid", pattern, "not a valid shared filter")
            return SubAckReasonCode.TOPIC_FILTER_INVALID
        if share is not None and self._identity.kind is not IdentityKind.SERVICE:
            self._refused("subscribe_not_authorized", pattern, "only services may share")
            return SubAckReasonCode.NOT_AUTHORIZED
        inner = view.inner if view is not None else share.inner if share is not None else pattern
        if not self._policy.may_subscribe(self._identity, inner):
            why = self._policy.explain(self._identity, "subscribe", inner)
            self._refused("subscribe_not_authorized", pattern, f"refused by policy: {why}")
            return SubAckReasonCode.NOT_AUTHORIZED
        settings = self._settings
        if pattern not in self._held and len(self._held) >= settings.max_subscriptions_per_session:
            self._counters.hit(
                LimitCode.SESSION_SUBSCRIPTIONS,
                f"SUBSCRIBE to {pattern!r} got 0x97: the session holds "
                f"max_subscriptions_per_session={settings.max_subscriptions_per_session} filters",
                peer=self._peer,
                identity=self._identity.name,
            )
            return SubAckReasonCode.QUOTA_EXCEEDED
        granted = min(request.max_qos, MAX_QOS)
        is_new = pattern not in self._held
        self.unsubscribe(pattern)  # a SUBSCRIBE to a held filter replaces it (spec 3.8.4)
        proxy = ViewSubscriber(self._subscriber, view) if view is not None else None
        group = None
        if share is not None:
            group = shared.join(self._broker, share, self._subscriber, granted)
        elif proxy is not None:
            self._broker.subscribe(proxy, Subscription(inner, granted))
        else:
            self._broker.subscribe(
                self._subscriber, Subscription(pattern, granted, no_local=request.no_local)
            )
        self._held[pattern] = _Held(
            granted, subscription_id, proxy, request.no_local, group, request.retain_as_published
        )
        if request.retain_as_published:
            self._with_rap += 1
        if group is not None:
            pass  # no retained messages for a shared subscription (spec 3.8.4)
        elif request.retain_handling == 0 or (request.retain_handling == 1 and is_new):
            self._retained_due.append((proxy or self._subscriber, inner, granted))
        if subscription_id is not None:
            self._with_ids += 1
        return SubAckReasonCode(granted)

    def _refused(self, code: str, pattern: str, why: str) -> None:
        log_event(
            logging.WARNING,
            code,
            f"SUBSCRIBE to {pattern!r} refused: {why}",
            peer=self._peer,
            identity=self._identity.name,
        )
