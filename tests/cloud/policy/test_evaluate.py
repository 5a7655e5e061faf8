"""Evaluation: deny wins, no statement no access, groups and attributes, the explanation."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.cloud.policy import Action, NamedPolicy, Subject, evaluate, parse_document
from tether.cloud.policy.evaluate import Evaluator
from tether.cloud.policy.patterns import covers, overlaps

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


MIXED = parse_document(
    {
        "statements": [
            {"sid": "c", "effect": "allow", "actions": ["connect"]},
            {"sid": "d1", "effect": "deny", "actions": ["subscribe", "publish"],
             "resources": ["a/secret/#", "+/x", "$SYS/b"]},
            {"sid": "a1", "effect": "allow", "actions": ["subscribe", "publish"],
             "resources": ["a/#", "+/+/y", "$SYS/#", "#"]},
            {"sid": "a2", "effect": "allow", "actions": ["subscribe", "publish"],
             "resources": ["b/+", "/"]},
        ]
    }
)  # fmt: skip
_level = st.sampled_from(["a", "b", "x", "y", "secret", "", "$SYS", "+"])


@given(st.lists(_level, min_size=1, max_size=4), st.booleans())
@settings(max_examples=400)
def test_the_first_level_index_never_changes_a_decision(levels: list[str], multi: bool) -> None:
    topic_filter = "/".join([*levels, "#"] if multi else levels) or "/"
    evaluator = Evaluator(_subject(MIXED))
    patterns = [(s.effect.value, r) for s in MIXED.statements[1:] for r in s.resources]
    for action in (Action.SUBSCRIBE, Action.PUBLISH):
        if action is Action.PUBLISH and ("+" in topic_filter or "#" in topic_filter):
            continue
        denied = any(e == "deny" and overlaps(r, topic_filter) for e, r in patterns)
        allowed = any(e == "allow" and covers(r, topic_filter) for e, r in patterns)
        assert evaluator._decide(action, topic_filter).allowed is (allowed and not denied)
