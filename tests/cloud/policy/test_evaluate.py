"""Evaluation: deny wins, no statement no access, groups and attributes, the explanation."""

from __future__ import annotations

from tether.cloud.policy import Action, NamedPolicy, Subject, evaluate, parse_document
from tether.cloud.policy.evaluate import Evaluator

FLEET = parse_document(
    {
        "statements": [
            {"sid": "connect", "effect": "allow", "actions": ["connect"]},
            {"sid": "own", "effect": "allow", "actions": ["publish", "subscribe", "receive"],
             "resources": ["devices/${serial}/#"]},
            {"sid": "group-fw", "effect": "allow", "actions": ["subscribe", "receive"],
             "resources": ["groups/${group}/firmware"]},
            {"sid": "line", "effect": "allow", "actions": ["publish"],
             "resources": ["lines/${attr.line}/status"]},
        ]
    }
)  # fmt: skip
NO_SECRETS = parse_document(
    {"statements": [{"sid": "no-secret", "effect": "deny", "actions": ["publish", "receive"],
                     "resources": ["devices/+/secret"]}]}
)  # fmt: skip


def _subject(*policies, groups=("g1",), attributes=(("line", "L7"),)) -> Subject:
    named = tuple(NamedPolicy(f"p{i}", 3, p) for i, p in enumerate(policies))
    return Subject("device", "SN1", groups, attributes, named)


def test_allow_by_statement_with_variables() -> None:
    subject = _subject(FLEET)
    assert evaluate(subject, Action.PUBLISH, "devices/SN1/telemetry").statement == "own"
    assert evaluate(subject, Action.SUBSCRIBE, "groups/g1/firmware").statement == "group-fw"
    assert not evaluate(subject, Action.SUBSCRIBE, "groups/g2/firmware").allowed
    assert evaluate(subject, Action.PUBLISH, "lines/L7/status").allowed
    assert not evaluate(subject, Action.PUBLISH, "lines/L8/status").allowed
    assert evaluate(subject, Action.CONNECT, "SN1").allowed


def test_deny_wins_over_allow_across_policies_and_is_named() -> None:
    subject = _subject(FLEET, NO_SECRETS)
    decision = evaluate(subject, Action.PUBLISH, "devices/SN1/secret")
    assert not decision.allowed
    assert (decision.policy, decision.version, decision.statement) == ("p1", 3, "no-secret")
    assert "refused by policy 'p1' v3 statement 'no-secret'" in decision.explain()
    # The subscription would receive the denied topic: refused as a whole.
    assert evaluate(subject, Action.SUBSCRIBE, "devices/SN1/#").statement == "no-secret"
    assert evaluate(subject, Action.SUBSCRIBE, "devices/SN1/telemetry").allowed


def test_no_statement_no_access() -> None:
    subject = _subject(NO_SECRETS)
    decision = evaluate(subject, Action.PUBLISH, "devices/SN1/telemetry")
    assert not decision.allowed and decision.policy is None
    assert "no statement allows it" in decision.explain()
    assert not evaluate(_subject(), Action.CONNECT, "SN1").allowed


def test_invalid_resources_are_refused_before_any_statement() -> None:
    subject = _subject(FLEET)
    assert evaluate(subject, Action.PUBLISH, "devices/SN1/+").reason == "not a valid topic name"
    shared = evaluate(subject, Action.SUBSCRIBE, "$share/g/devices/SN1/x")
    assert "shared" in shared.reason


def test_decisions_are_cached_within_a_bound() -> None:
    evaluator = Evaluator(_subject(FLEET))
    first = evaluator.decide(Action.PUBLISH, "devices/SN1/t")
    assert evaluator.decide(Action.PUBLISH, "devices/SN1/t") is first
    for i in range(5000):
        evaluator.decide(Action.PUBLISH, f"devices/SN1/{i}")
    assert len(evaluator._cache) <= 4096
