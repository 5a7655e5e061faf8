"""SUBSCRIBE, filter by filter: syntax, policy, then the quotas, each with its SUBACK code.

Per filter, in this order: 0x8F Topic Filter invalid, 0x9E shared subscriptions not
supported, 0x87 Not authorized (the policy), then the quotas:

- only the first ``max_filters_per_subscribe`` filters of one SUBSCRIBE are considered; every
  filter after them gets 0x97 Quota exceeded without being looked at (the packet itself is
  bounded by the maximum packet size);
- a session holds at most ``max_subscriptions_per_session`` filters: a new filter beyond
  that gets 0x97 (re-subscribing to a filter it holds only replaces it and is allowed).

A quota answers in SUBACK and the session stays: the spec gives SUBACK a reason code per
filter precisely so a server can refuse one without dropping the connection. The session then
reads its next packet only after ``quota_backoff`` (1 s): a client that keeps sending
SUBSCRIBE over its quota gets one packet a second of the gateway's time, not all of it.
"""

from __future__ import annotations

import logging

import mqtt5
from mqtt5 import QoS, SubAckReasonCode

from tether.cloud.gateway.broker import Broker, Subscriber, Subscription
from tether.cloud.gateway.events import log_event
from tether.cloud.gateway.identity import Identity
from tether.cloud.gateway.limits import LimitCode, LimitCounters
from tether.cloud.gateway.policy import TopicPolicy
from tether.cloud.gateway.settings import GatewaySettings
from tether.cloud.gateway.topics import is_shared_subscription, is_valid_topic_filter


def subscribe(
    packet: mqtt5.SubscribePacket,
    *,
    subscriber: Subscriber,
    identity: Identity,
    peer: str,
    broker: Broker,
    policy: TopicPolicy,
    settings: GatewaySettings,
    counters: LimitCounters,
) -> list[SubAckReasonCode]:
    """Apply one SUBSCRIBE to ``broker``; the SUBACK reason code of each filter, in order."""
    codes: list[SubAckReasonCode] = []
    filters = packet.topic_filters
    considered = filters[: settings.max_filters_per_subscribe]
    for topic_filter in considered:
        codes.append(
            _one(topic_filter, subscriber, identity, peer, broker, policy, settings, counters)
        )
    over = len(filters) - len(considered)
    if over > 0:
        counters.hit(
            LimitCode.SUBSCRIBE_FILTERS,
            f"SUBSCRIBE with {len(filters)} filters: the {over} beyond "
            f"max_filters_per_subscribe={settings.max_filters_per_subscribe} got 0x97",
            peer=peer,
            identity=identity.name,
        )
        codes.extend([SubAckReasonCode.QUOTA_EXCEEDED] * over)
    return codes


def _one(
    topic_filter: mqtt5.TopicFilter,
    subscriber: Subscriber,
    identity: Identity,
    peer: str,
    broker: Broker,
    policy: TopicPolicy,
    settings: GatewaySettings,
    counters: LimitCounters,
) -> SubAckReasonCode:
    pattern = topic_filter.pattern
    if not is_valid_topic_filter(pattern):
        _refused(peer, identity, "mqtt_topic_filter_invalid", pattern, "not a valid topic filter")
        return SubAckReasonCode.TOPIC_FILTER_INVALID
    if is_shared_subscription(pattern):
        _refused(
            peer,
            identity,
            "mqtt_shared_subscriptions_unsupported",
            pattern,
            "shared subscriptions are not supported",
        )
        return SubAckReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
    if not policy.may_subscribe(identity, pattern):
        why = policy.explain(identity, "subscribe", pattern)
        _refused(peer, identity, "subscribe_not_authorized", pattern, f"refused by policy: {why}")
        return SubAckReasonCode.NOT_AUTHORIZED
    if (
        not broker.has_subscription(subscriber, pattern)
        and broker.subscription_count(subscriber) >= settings.max_subscriptions_per_session
    ):
        counters.hit(
            LimitCode.SESSION_SUBSCRIPTIONS,
            f"SUBSCRIBE to {pattern!r} got 0x97: the session holds "
            f"max_subscriptions_per_session={settings.max_subscriptions_per_session} filters",
            peer=peer,
            identity=identity.name,
        )
        return SubAckReasonCode.QUOTA_EXCEEDED
    granted = min(int(topic_filter.max_qos), int(QoS.AT_LEAST_ONCE))
    broker.subscribe(subscriber, Subscription(pattern, granted, no_local=topic_filter.no_local))
    return SubAckReasonCode(granted)


def _refused(peer: str, identity: Identity, code: str, pattern: str, why: str) -> None:
    log_event(
        logging.WARNING,
        code,
        f"SUBSCRIBE to {pattern!r} refused: {why}",
        peer=peer,
        identity=identity.name,
    )
