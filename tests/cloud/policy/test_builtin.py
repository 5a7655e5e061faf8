"""The built-in default documents reproduce the original hand-written topic rules exactly.

``_legacy`` is the policy as it was written before policies were data (kept here as the
reference); the property tests compare it with the document-based ``DefaultPolicy`` on
generated topics and filters.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.cloud.gateway import DefaultPolicy, Identity, IdentityKind
from tether.cloud.gateway.identity import IDENTITY_NAME_PATTERN
from tether.cloud.gateway.topics import (
    has_wildcard,
    is_shared_subscription,
    is_valid_topic_filter,
    is_valid_topic_name,
)
from tether.cloud.policy import BUILTIN, BUILTIN_DEVICE, Action, evaluate
from tether.cloud.policy.evaluate import NamedPolicy, Subject

DEVICE = Identity(IdentityKind.DEVICE, "SN0001", "00" * 32, "CN=Device CA")
SERVICE = Identity(IdentityKind.SERVICE, "ingest", "11" * 32, "CN=Service CA")
POLICY = DefaultPolicy()


def _own(levels: list[str], name: str) -> bool:
    return (
        len(levels) >= 3
        and levels[0] == "devices"
        and levels[1] == name
        and not has_wildcard(levels[0] + levels[1])
    )


def _legacy_publish(identity: Identity, topic: str) -> bool:
    if not is_valid_topic_name(topic) or not IDENTITY_NAME_PATTERN.fullmatch(identity.name):
        return False
    levels = topic.split("/")
    if identity.kind is IdentityKind.DEVICE:
        return _own(levels, identity.name)
    return (
        len(levels) >= 4 and levels[0] == "devices" and bool(levels[1]) and levels[2] == "commands"
    )


def _legacy_subscribe(identity: Identity, topic_filter: str) -> bool:
    if (
        not is_valid_topic_filter(topic_filter)
        or is_shared_subscription(topic_filter)
        or not IDENTITY_NAME_PATTERN.fullmatch(identity.name)
    ):
        return False
    levels = topic_filter.split("/")
    if identity.kind is IdentityKind.DEVICE:
        return _own(levels, identity.name)
    return len(levels) >= 2 and levels[0] == "devices"


level = st.sampled_from(
    ["devices", "SN0001", "SN00011", "SN0002", "commands", "telemetry", "", "+", "#", "$SYS",
     "$share", "g", "é"]
)  # fmt: skip
paths = st.lists(level, min_size=1, max_size=6).map("/".join)
identities = st.sampled_from([DEVICE, SERVICE])


@given(identities, paths)
@settings(max_examples=400)
def test_publish_agrees_with_the_original_rules(identity: Identity, topic: str) -> None:
    assert POLICY.may_publish(identity, topic) is _legacy_publish(identity, topic)


@given(identities, paths)
@settings(max_examples=400)
def test_subscribe_agrees_with_the_original_rules(identity: Identity, topic_filter: str) -> None:
    assert POLICY.may_subscribe(identity, topic_filter) is _legacy_subscribe(identity, topic_filter)


def test_every_identity_may_connect_by_default_and_the_statement_is_named() -> None:
    assert POLICY.may_connect(DEVICE) and POLICY.may_connect(SERVICE)
    assert "builtin:device" in POLICY.explain(DEVICE, "publish", "devices/SN0001/telemetry")
    refusal = POLICY.explain(DEVICE, "publish", "devices/SN0002/telemetry")
    assert "refused" in refusal and "no statement allows it" in refusal


def test_the_builtin_document_evaluates_the_same_outside_the_gateway() -> None:
    subject = Subject(
        "device", "SN0001", policies=(NamedPolicy(BUILTIN_DEVICE, 0, BUILTIN[BUILTIN_DEVICE]),)
    )
    decision = evaluate(subject, Action.SUBSCRIBE, "devices/SN0001/#")
    assert decision.allowed and decision.statement == "own-subtree"
