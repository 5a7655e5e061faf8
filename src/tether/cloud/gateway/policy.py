"""Who may publish and subscribe where: the gateway's topic policy.

The default policy gives every device its own subtree and nothing else:

- a device publishes and subscribes only under ``devices/<serial>/``; wildcards are allowed
  inside its own subtree (``devices/<serial>/#``), never across devices (``devices/+/x``,
  ``devices/#``, ``#``);
- a service may subscribe to any filter under ``devices/`` (``devices/+/telemetry``,
  ``devices/#``) and publish only commands: ``devices/<serial>/commands/<...>``.

A Response Topic (MQTT 5 request/response) names where the *receiver* is asked to publish
its reply, so a device could otherwise aim a service's reply (published with the service's
rights, attributed to the service) at another device: ``devices/<victim>/commands/...``. A
device's Response Topic must therefore be a topic the device may publish to itself (its own
subtree); a service's is checked for syntax only, because the device that replies is held to
its own publish rights anyway. The session refuses a PUBLISH (or a Will) whose Response Topic
fails this exactly like a publish outside the policy. Correlation Data is opaque bytes that
only mean something together with the Response Topic; it is forwarded as sent.

Everything else, including ``$``-topics and shared subscriptions, is refused. Inputs are
assumed to be syntactically valid (see :mod:`tether.cloud.gateway.topics`); the policy checks
again where it matters, so an invalid topic is never allowed.
"""

from __future__ import annotations

from typing import Protocol

from tether.cloud.gateway.identity import IDENTITY_NAME_PATTERN, Identity, IdentityKind
from tether.cloud.gateway.topics import (
    has_wildcard,
    is_shared_subscription,
    is_valid_topic_filter,
    is_valid_topic_name,
)

DEVICES_ROOT = "devices"
COMMANDS_LEVEL = "commands"


class TopicPolicy(Protocol):
    """Decides, per identity, which topics it may publish to and which filters it may use."""

    def may_publish(self, identity: Identity, topic: str) -> bool:
        """Whether ``identity`` may publish to topic name ``topic``."""
        ...

    def may_subscribe(self, identity: Identity, topic_filter: str) -> bool:
        """Whether ``identity`` may subscribe with ``topic_filter``."""
        ...

    def may_request_reply(self, identity: Identity, response_topic: str) -> bool:
        """Whether ``identity`` may ask receivers to reply on ``response_topic``."""
        ...


class DefaultPolicy:
    """The default policy described in the module docstring."""

    def may_publish(self, identity: Identity, topic: str) -> bool:
        """Device: own subtree. Service: ``devices/<serial>/commands/...`` only."""
        if not is_valid_topic_name(topic) or not IDENTITY_NAME_PATTERN.fullmatch(identity.name):
            return False
        levels = topic.split("/")
        if identity.kind is IdentityKind.DEVICE:
            return _in_own_subtree(levels, identity.name)
        if identity.kind is IdentityKind.SERVICE:
            return (
                len(levels) >= 4
                and levels[0] == DEVICES_ROOT
                and bool(levels[1])
                and levels[2] == COMMANDS_LEVEL
            )
        return False

    def may_subscribe(self, identity: Identity, topic_filter: str) -> bool:
        """Device: own subtree (wildcards inside it). Service: any filter under ``devices/``."""
        if (
            not is_valid_topic_filter(topic_filter)
            or is_shared_subscription(topic_filter)
            or not IDENTITY_NAME_PATTERN.fullmatch(identity.name)
        ):
            return False
        levels = topic_filter.split("/")
        if identity.kind is IdentityKind.DEVICE:
            return _in_own_subtree(levels, identity.name)
        if identity.kind is IdentityKind.SERVICE:
            return len(levels) >= 2 and levels[0] == DEVICES_ROOT
        return False

    def may_request_reply(self, identity: Identity, response_topic: str) -> bool:
        """Device: a topic it may publish to itself. Service: any valid topic name."""
        if identity.kind is IdentityKind.DEVICE:
            return self.may_publish(identity, response_topic)
        if identity.kind is IdentityKind.SERVICE:
            return is_valid_topic_name(response_topic)
        return False


def _in_own_subtree(levels: list[str], name: str) -> bool:
    # The first two levels are literal (no wildcard can widen them) and there is a third.
    return (
        len(levels) >= 3
        and levels[0] == DEVICES_ROOT
        and levels[1] == name
        and not has_wildcard(levels[0] + levels[1])
    )
