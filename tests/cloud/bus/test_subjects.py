"""MQTT topics as NATS subjects: reversible, valid for NATS, and never narrower than MQTT.

Levels come from an alphabet built to break a naive mapping: dots, spaces, tabs, empty
levels, ``$``, ``%`` (the escape character itself), NATS wildcards as literal characters,
Unicode. A NATS subject matcher written from the NATS docs checks the superset rule: every
topic an MQTT filter matches is matched by one of the filter's subjects.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.cloud.bus.subjects import (
    decode_level,
    encode_level,
    filter_subjects,
    parse_shared_queue,
    passed_subject,
    shared_filter_subjects,
    shared_queue,
    shared_topic_subject,
    subject_topic,
    topic_subject,
)
from tether.cloud.gateway.topics import is_valid_topic_filter, is_valid_topic_name, matches

NASTY = st.sampled_from(
    ["", ".", "a.b", " ", "a b", "\t", "$SYS", "$", "%", "%41", "*", ">", "a*", "é", "日本", "x"]
)
ANY_LEVEL = st.text(
    alphabet=st.characters(blacklist_characters="/+#\x00", blacklist_categories=("Cs",)),
    max_size=8,
)
LEVELS = st.one_of(NASTY, ANY_LEVEL)
TOPICS = st.lists(LEVELS, min_size=1, max_size=5).map("/".join).filter(is_valid_topic_name)
# NATS: tokens split at ".", no whitespace, no empty token; "*" / ">" only as whole tokens.
TOKEN = re.compile(r"[^\s.*>]+")


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.one_of(LEVELS, st.just("+")), max_size=4))
    if draw(st.booleans()) or not levels:
        levels.append("#")
    return "/".join(levels)


def nats_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching, from its documentation: ``*`` one token, ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(want) == len(have)


@settings(max_examples=500)
@given(LEVELS)
def test_a_level_round_trips_and_is_one_valid_token(level: str) -> None:
    token = encode_level(level)
    assert TOKEN.fullmatch(token)
    assert not token.startswith("$")
    assert decode_level(token) == level


@settings(max_examples=500)
@given(TOPICS)
def test_a_topic_round_trips_through_its_subject(topic: str) -> None:
    subject = topic_subject(topic)
    assert all(TOKEN.fullmatch(token) for token in subject.split("."))
    assert subject_topic(subject) == topic


@settings(max_examples=300)
@given(TOPICS, TOPICS)
def test_distinct_topics_get_distinct_subjects(first: str, second: str) -> None:
    assert (topic_subject(first) == topic_subject(second)) == (first == second)


@settings(max_examples=800)
@given(topic_filters().filter(is_valid_topic_filter), TOPICS)
def test_what_mqtt_matches_some_filter_subject_matches(topic_filter: str, topic: str) -> None:
    if matches(topic_filter, topic):
        subject = topic_subject(topic)
        assert any(nats_matches(p, subject) for p in filter_subjects(topic_filter))


def test_wildcards_map_as_nats_mqtt_does() -> None:
    assert filter_subjects("devices/+/telemetry") == ("mqtt.devices.*.telemetry",)
    assert filter_subjects("devices/#") == ("mqtt.devices.>", "mqtt.devices")
    assert filter_subjects("#") == ("mqtt.>",)
    assert topic_subject("a.b/ /") == "mqtt.a%2Eb.%20.%"


GROUPS = st.one_of(NASTY, ANY_LEVEL).filter(bool)


@settings(max_examples=300)
@given(GROUPS, topic_filters())
def test_a_shared_queue_name_round_trips_and_is_valid_for_nats(group: str, pattern: str) -> None:
    queue = shared_queue(group, pattern)
    assert all(TOKEN.fullmatch(token) for token in queue.split("."))  # no wildcard, no space
    assert parse_shared_queue(queue) == (group, pattern)
    assert all(TOKEN.fullmatch(t) for t in passed_subject(queue).split("."))


@settings(max_examples=300)
@given(GROUPS, topic_filters(), GROUPS, topic_filters())
def test_distinct_shared_subscriptions_get_distinct_queues(
    group: str, pattern: str, other_group: str, other_pattern: str
) -> None:
    same = (group, pattern) == (other_group, other_pattern)
    assert (shared_queue(group, pattern) == shared_queue(other_group, other_pattern)) == same


def test_shared_copies_have_their_own_subjects() -> None:
    assert shared_topic_subject("devices/a.b/t") == "tether.shared.devices.a%2Eb.t"
    assert shared_filter_subjects("devices/#") == (
        "tether.shared.devices.>",
        "tether.shared.devices",
    )
    assert shared_queue("in gest", "devices/+/#") == "in%20gest.devices.%2B.%23"
    assert passed_subject("g.a") == "tether.passed.g.a"
