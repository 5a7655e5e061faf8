"""Who may connect, publish and subscribe where: the gateway's topic policy.

The rules are policy documents (:mod:`tether.cloud.policy`), evaluated per identity. With no
policy attached, the built-in default (:mod:`tether.cloud.policy.builtin`) keeps the original
fixed rules exactly:

- a device publishes and subscribes only under ``devices/<serial>/``; wildcards are allowed
  inside its own subtree (``devices/<serial>/#``), never across devices (``devices/+/x``,
  ``devices/#``, ``#``);
- a service may subscribe to any filter under ``devices/`` (``devices/+/telemetry``,
  ``devices/#``) and publish only commands: ``devices/<serial>/commands/<...>``.

An identity whose name is not in the serial grammar gets nothing (its name would become a
topic level); an identity that may not ``connect`` may do nothing else either, so a session
whose connect right was withdrawn cannot publish its Will.

A Response Topic (MQTT 5 request/response) names where the *receiver* is asked to publish
its reply, so a device could otherwise aim a service's reply (published with the service's
rights, attributed to the service) at another device: ``devices/<victim>/commands/...``. A
device's Response Topic must therefore be a topic the device may publish to itself; a
service's is checked for syntax only, because the device that replies is held to its own
publish rights anyway. The session refuses a PUBLISH (or a Will) whose Response Topic fails
this exactly like a publish outside the policy. Correlation Data is opaque bytes that only
mean something together with the Response Topic; it is forwarded as sent.

Everything else, including ``$``-topics and shared subscriptions, is refused unless a policy
allows it (shared subscriptions never are). ``explain`` names the policy and statement that
decided, for the refusal lines in the gateway log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tether.cloud.gateway.identity import IDENTITY_NAME_PATTERN, Identity, IdentityKind
from tether.cloud.gateway.topics import is_valid_topic_name
from tether.cloud.policy.builtin import BUILTIN, builtin_for
from tether.cloud.policy.document import Action
from tether.cloud.policy.evaluate import Decision, Evaluator, NamedPolicy, Subject

DEVICES_ROOT = "devices"
COMMANDS_LEVEL = "commands"
MAX_CACHED_IDENTITIES = 100_000  # evaluators kept; cleared (and rebuilt on use) when full


class TopicPolicy(Protocol):
    """Decides, per identity, which topics it may publish to and which filters it may use."""

    def may_connect(self, identity: Identity) -> bool:
        """Whether ``identity`` may hold a session at all."""
        ...

    def may_publish(self, identity: Identity, topic: str) -> bool:
        """Whether ``identity`` may publish to topic name ``topic``."""
        ...

    def may_subscribe(self, identity: Identity, topic_filter: str) -> bool:
        """Whether ``identity`` may subscribe with ``topic_filter``."""
        ...

    def may_request_reply(self, identity: Identity, response_topic: str) -> bool:
        """Whether ``identity`` may ask receivers to reply on ``response_topic``."""
        ...

    def explain(self, identity: Identity, action: str, resource: str) -> str:
        """One line naming the decision on ``action`` and the policy statement behind it."""
        ...


def builtin_subject(identity: Identity) -> Subject:
    """The subject of an identity judged by the built-in default of its kind."""
    name = builtin_for(identity.kind.value)
    return Subject(
        identity.kind.value, identity.name, policies=(NamedPolicy(name, 0, BUILTIN[name]),)
    )


class DocumentPolicy:
    """A :class:`TopicPolicy` over policy documents; ``resolve`` says which apply to whom.

    Evaluators are cached per identity until :meth:`invalidate` (called when the policies
    change). Not thread-safe: the gateway uses it from its event loop.
    """

    def __init__(self, resolve: Callable[[Identity], Subject] = builtin_subject) -> None:
        self._resolve = resolve
        self._evaluators: dict[Identity, Evaluator] = {}

    def invalidate(self) -> None:
        """Forget every cached evaluator (the next decision resolves the identity again)."""
        self._evaluators.clear()

    def evaluator(self, identity: Identity) -> Evaluator:
        """The (cached) evaluator of ``identity``."""
        evaluator = self._evaluators.get(identity)
        if evaluator is None:
            if len(self._evaluators) >= MAX_CACHED_IDENTITIES:
                self._evaluators.clear()
            evaluator = self._evaluators[identity] = Evaluator(self._resolve(identity))
        return evaluator

    def decide(self, identity: Identity, action: Action, resource: str) -> Decision:
        """The decision, with the two gates of the module docstring (name, connect right)."""
        if not IDENTITY_NAME_PATTERN.fullmatch(identity.name):
            return Decision(False, action, resource, reason="identity name outside the grammar")
        evaluator = self.evaluator(identity)
        if action is not Action.CONNECT:
            connect = evaluator.decide(Action.CONNECT, identity.name)
            if not connect.allowed:
                return connect
        return evaluator.decide(action, resource)

    def may_connect(self, identity: Identity) -> bool:
        """Whether some statement allows ``connect`` and none denies it."""
        return self.decide(identity, Action.CONNECT, identity.name).allowed

    def may_publish(self, identity: Identity, topic: str) -> bool:
        """Whether ``publish`` on ``topic`` is allowed."""
        return self.decide(identity, Action.PUBLISH, topic).allowed

    def may_subscribe(self, identity: Identity, topic_filter: str) -> bool:
        """Whether ``subscribe`` and ``receive`` on ``topic_filter`` are allowed."""
        return self.decide(identity, Action.SUBSCRIBE, topic_filter).allowed

    def may_request_reply(self, identity: Identity, response_topic: str) -> bool:
        """Device: a topic it may publish to itself. Service: any valid topic name."""
        if identity.kind is IdentityKind.DEVICE:
            return self.may_publish(identity, response_topic)
        if identity.kind is IdentityKind.SERVICE:
            return is_valid_topic_name(response_topic)
        return False

    def explain(self, identity: Identity, action: str, resource: str) -> str:
        """The decision on ``action`` as one line naming policy and statement."""
        return self.decide(identity, Action(action), resource).explain()


class DefaultPolicy(DocumentPolicy):
    """The built-in default for every identity (no registry): the original fixed rules."""

    def __init__(self) -> None:
        super().__init__(builtin_subject)
