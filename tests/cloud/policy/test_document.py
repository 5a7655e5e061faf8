"""Policy documents: the schema, validation that names the statement, a round trip."""

from __future__ import annotations

import json

import pytest

from tether.cloud.policy import POLICY_SCHEMA, Action, Effect, InvalidPolicyError, parse_document


def _doc(*statements: dict) -> dict:
    return {"version": "1", "statements": list(statements)}


ALLOW = {"sid": "ok", "effect": "allow", "actions": ["publish"], "resources": ["a/${serial}"]}


def test_a_valid_document_round_trips_through_its_canonical_json() -> None:
    document = parse_document(_doc(ALLOW, {"effect": "deny", "actions": ["connect"]}))
    assert document.statements[0].effect is Effect.ALLOW
    assert document.statements[1].sid == "#2"
    assert document.statements[1].resources == ("+",)
    assert document.statements[1].actions == frozenset({Action.CONNECT})
    assert parse_document(document.canonical()) == document


@pytest.mark.parametrize(
    ("statement", "words"),
    [
        ({"sid": "bad", "effect": "permit", "actions": ["publish"], "resources": ["a"]}, "effect"),
        ({"sid": "bad", "effect": "allow", "actions": ["fly"], "resources": ["a"]}, "actions"),
        ({"sid": "bad", "effect": "allow", "actions": ["publish"]}, "need resources"),
        (
            {"sid": "bad", "effect": "allow", "actions": ["publish"], "resources": ["a/#/b"]},
            "filter",
        ),
        (
            {
                "sid": "bad",
                "effect": "allow",
                "actions": ["subscribe"],
                "resources": ["$share/g/a"],
            },
            "shared",
        ),
        (
            {"sid": "bad", "effect": "allow", "actions": ["publish"], "resources": ["${nope}"]},
            "unknown variable",
        ),
        (
            {"sid": "bad", "effect": "allow", "actions": ["publish"], "resources": ["${attr.Bad}"]},
            "unknown variable",
        ),
        (
            {
                "sid": "bad",
                "effect": "allow",
                "actions": ["publish", "connect"],
                "resources": ["a"],
            },
            "separate",
        ),
        (
            {"sid": "bad", "effect": "allow", "actions": ["connect"], "resources": ["a/b"]},
            "client ids",
        ),
        (
            {"sid": "bad", "effect": "allow", "actions": ["publish"], "resources": ["a"], "x": 1},
            "unknown keys",
        ),
    ],
)
def test_an_invalid_statement_is_refused_by_name(statement: dict, words: str) -> None:
    with pytest.raises(InvalidPolicyError) as refused:
        parse_document(_doc(ALLOW, statement))
    assert refused.value.code == "policy_invalid"
    assert 'statement "bad"' in refused.value.message and words in refused.value.message


def test_unnamed_statements_are_named_by_position_and_sids_are_unique() -> None:
    with pytest.raises(InvalidPolicyError, match=r"statement #2: effect"):
        parse_document(_doc(ALLOW, {"effect": "x", "actions": ["publish"], "resources": ["a"]}))
    with pytest.raises(InvalidPolicyError, match="used twice"):
        parse_document(_doc(ALLOW, ALLOW))


@pytest.mark.parametrize(
    "data",
    [
        "not json",
        "[]",
        json.dumps({"statements": []}),
        json.dumps({"version": "2", "statements": [ALLOW]}),
        "x" * 70_000,
    ],
)
def test_documents_that_are_not_policies_are_refused(data: str) -> None:
    with pytest.raises(InvalidPolicyError):
        parse_document(data)


def test_the_schema_lists_every_action_and_effect() -> None:
    item = POLICY_SCHEMA["properties"]["statements"]["items"]
    assert set(item["properties"]["actions"]["items"]["enum"]) == {a.value for a in Action}
    assert set(item["properties"]["effect"]["enum"]) == {"allow", "deny"}
    json.dumps(POLICY_SCHEMA)
