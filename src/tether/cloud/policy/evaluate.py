"""Evaluating policies for one identity: deny wins, no statement no access, and why.

An :class:`Evaluator` is compiled once per identity from the policies that apply to it (see
:class:`Subject`): every resource's variables are substituted then, so a decision is only
pattern matching. Rules, in order:

1. a resource that is not valid for the action (an invalid topic name or filter, a shared
   subscription) is refused without looking at any statement;
2. any applying **deny** refuses (the first one, in policy then statement order, is named);
3. else the first applying **allow** allows;
4. else nothing allows: refused ("no statement, no access").

Subscribing needs both ``subscribe`` and ``receive`` on the filter: ``receive`` is checked
when a subscription is made (and again whenever the policy changes), not per message, so the
delivery path costs nothing extra. Decisions are cached per evaluator (bounded,
``CACHE_SIZE`` entries, cleared when full): a device publishing to the same few topics pays
the matching once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tether.cloud.gateway.topics import (
    is_shared_subscription,
    is_valid_topic_filter,
    is_valid_topic_name,
)
from tether.cloud.policy.document import CLIENT_ACTIONS, Action, Effect, PolicyDocument
from tether.cloud.policy.patterns import client_matches, covers_levels, expand, overlaps_levels

CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class NamedPolicy:
    """A policy document with its name and version (``0`` for a built-in one)."""

    name: str
    version: int
    document: PolicyDocument


@dataclass(frozen=True, slots=True)
class Subject:
    """Who asks: what variables resolve to, and which policies apply (in order)."""

    kind: str
    name: str
    groups: tuple[str, ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()
    policies: tuple[NamedPolicy, ...] = ()

    @property
    def attribute_map(self) -> Mapping[str, str]:
        """The attributes as a mapping."""
        return dict(self.attributes)


@dataclass(frozen=True, slots=True)
class Decision:
    """Allowed or not, and the statement that decided (``None``: no statement applied)."""

    allowed: bool
    action: Action
    resource: str
    policy: str | None = None
    version: int | None = None
    statement: str | None = None
    reason: str = ""

    def explain(self) -> str:
        """One line for logs, the CLI and the API."""
        verdict = "allowed" if self.allowed else "refused"
        if self.policy is None:
            return f"{self.action.value} {self.resource!r} {verdict}: {self.reason}"
        return (
            f"{self.action.value} {self.resource!r} {verdict} by policy {self.policy!r} "
            f"v{self.version} statement {self.statement!r}"
        )


@dataclass(frozen=True, slots=True)
class _Rule:
    effect: Effect
    policy: str
    version: int
    sid: str
    pattern: str
    levels: tuple[str, ...]


class _Rules:
    """One action's rules of one effect, also indexed by their first level: a resource whose
    first level is a literal only meets the rules that start with it or with a wildcard."""

    __slots__ = ("all", "by_first", "wild")

    def __init__(self) -> None:
        self.all: list[_Rule] = []
        self.by_first: dict[str, list[_Rule]] = {}
        self.wild: list[_Rule] = []

    def add(self, rule: _Rule) -> None:
        self.all.append(rule)
        first = rule.levels[0]
        if first in ("+", "#"):
            self.wild.append(rule)
        else:
            self.by_first.setdefault(first, []).append(rule)

    def candidates(self, first: str) -> list[_Rule] | tuple[list[_Rule], ...]:
        if first in ("+", "#"):
            return (self.all,)
        return (self.by_first.get(first, []), self.wild)


@dataclass
class Evaluator:
    """Decisions for one :class:`Subject` (not thread-safe: one event loop uses it)."""

    subject: Subject
    _rules: dict[Action, tuple[_Rules, _Rules]] = field(init=False, repr=False)
    _cache: dict[tuple[Action, str], Decision] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rules = {action: (_Rules(), _Rules()) for action in Action}
        self._cache = {}
        attributes = self.subject.attribute_map
        for policy in self.subject.policies:
            for statement in policy.document.statements:
                for resource in statement.resources:
                    for pattern in expand(
                        resource,
                        serial=self.subject.name,
                        groups=self.subject.groups,
                        attributes=attributes,
                    ):
                        rule = _Rule(
                            statement.effect,
                            policy.name,
                            policy.version,
                            statement.sid,
                            pattern,
                            tuple(pattern.split("/")),
                        )
                        for action in statement.actions:
                            denies, allows = self._rules[action]
                            (denies if statement.effect is Effect.DENY else allows).add(rule)

    def decide(self, action: Action, resource: str) -> Decision:
        """The decision for ``action`` on ``resource`` (a topic name, filter or client id)."""
        key = (action, resource)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if action is Action.SUBSCRIBE:
            decision = self._decide(Action.SUBSCRIBE, resource)
            if decision.allowed:
                receive = self._decide(Action.RECEIVE, resource)
                if not receive.allowed:
                    decision = receive
        else:
            decision = self._decide(action, resource)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = decision
        return decision

    def _decide(self, action: Action, resource: str) -> Decision:
        invalid = _invalid(action, resource)
        if invalid:
            return Decision(False, action, resource, reason=invalid)
        denies, allows = self._rules[action]
        if action in CLIENT_ACTIONS:
            for rule in denies.all:
                if client_matches(rule.pattern, resource):
                    return _decided(False, action, resource, rule)
            for rule in allows.all:
                if client_matches(rule.pattern, resource):
                    return _decided(True, action, resource, rule)
        else:
            levels = resource.split("/")  # once per decision, not once per pattern
            for group in denies.candidates(levels[0]):
                for rule in group:
                    if overlaps_levels(rule.levels, levels):
                        return _decided(False, action, resource, rule)
            for group in allows.candidates(levels[0]):
                for rule in group:
                    if covers_levels(rule.levels, levels):
                        return _decided(True, action, resource, rule)
        return Decision(False, action, resource, reason="no statement allows it")

    def statements(self) -> list[tuple[str, int, str, str, Action, str]]:
        """Every compiled rule: (policy, version, statement, effect, action, pattern)."""
        out = []
        for action, (denies, allows) in self._rules.items():
            for rule in (*denies.all, *allows.all):
                out.append(
                    (rule.policy, rule.version, rule.sid, rule.effect.value, action, rule.pattern)
                )
        return out


def _decided(allowed: bool, action: Action, resource: str, rule: _Rule) -> Decision:
    return Decision(allowed, action, resource, rule.policy, rule.version, rule.sid)


def _invalid(action: Action, resource: str) -> str:
    if action in CLIENT_ACTIONS:
        return "" if resource else "empty client id"
    if action is Action.PUBLISH:
        return "" if is_valid_topic_name(resource) else "not a valid topic name"
    if not is_valid_topic_filter(resource):
        return "not a valid topic filter"
    if is_shared_subscription(resource):
        return "shared subscriptions are not supported"
    return ""


def evaluate(subject: Subject, action: Action, resource: str) -> Decision:
    """One decision without keeping an evaluator (the CLI's and the API's ``policy test``)."""
    return Evaluator(subject).decide(action, resource)


def subject_policies(policies: Sequence[NamedPolicy]) -> tuple[NamedPolicy, ...]:
    """Policies deduplicated by name, first occurrence kept (order decides naming only)."""
    seen: dict[str, NamedPolicy] = {}
    for policy in policies:
        seen.setdefault(policy.name, policy)
    return tuple(seen.values())
