"""Resource patterns against topics and filters, checked against paho-mqtt's matcher.

``paho.mqtt.client.topic_matches_sub`` is the reference: on topic *names* ``covers`` and
``overlaps`` must agree with it exactly; on client *filters* every topic a covered filter can
match (below a trailing ``#``'s parent, see ``patterns``) must match the pattern, and every
topic both match must be seen by ``overlaps``.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from tether.cloud.gateway.topics import is_valid_topic_filter, is_valid_topic_name, matches
from tether.cloud.policy.patterns import covers, expand, overlaps

# Levels with the interesting cases: empty levels, '$' starts, Unicode, near-collisions.
literal_level = st.sampled_from(["a", "b", "", "$SYS", "$x", "é", "日本", "a b", "SN1", "SN10"])
name_levels = st.lists(literal_level, min_size=1, max_size=5)
filter_level = st.one_of(literal_level, st.just("+"))


@st.composite
def topic_names(draw: st.DrawFn) -> str:
    topic = "/".join(draw(name_levels))
    if not topic:
        topic = draw(st.sampled_from(["a", "/", "$SYS"]))
    return topic


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(filter_level, min_size=1, max_size=5))
    if draw(st.booleans()):
        levels.append("#")
    elif draw(st.integers(0, 9)) == 0:
        levels = ["#"]
    topic_filter = "/".join(levels)
    return topic_filter or "a"


def _paho(topic_filter: str, topic: str) -> bool:
    return bool(topic_matches_sub(topic_filter, topic))


@given(topic_filters(), topic_names())
@settings(max_examples=300)
def test_on_topic_names_covers_and_overlaps_are_mqtt_matching(pattern: str, topic: str) -> None:
    assert is_valid_topic_filter(pattern) and is_valid_topic_name(topic)
    expected = _paho(pattern, topic)
    assert matches(pattern, topic) is expected
    assert covers(pattern, topic) is expected
    assert overlaps(pattern, topic) is expected


def _is_parent_topic(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` is one MQTT delivers to ``x/#`` only because ``x`` matches it."""
    return topic_filter.endswith("/#") and _paho(topic_filter[:-2], topic)


@given(topic_filters(), topic_filters(), st.lists(topic_names(), min_size=1, max_size=8))
@settings(max_examples=300)
def test_a_covered_filter_only_matches_topics_the_pattern_matches(
    pattern: str, topic_filter: str, topics: list[str]
) -> None:
    # Topics derived from the filter itself, so matching ones are actually generated.
    derived = [topic_filter.replace("+", "a").replace("#", "b/c"), topic_filter.replace("/#", "")]
    for topic in [*topics, *derived]:
        if not is_valid_topic_name(topic) or not _paho(topic_filter, topic):
            continue
        if covers(pattern, topic_filter) and not _is_parent_topic(topic_filter, topic):
            assert _paho(pattern, topic), (pattern, topic_filter, topic)
        if _paho(pattern, topic):
            assert overlaps(pattern, topic_filter), (pattern, topic_filter, topic)


@pytest.mark.parametrize(
    ("pattern", "topic_filter", "covered", "overlapping"),
    [
        ("devices/SN1/+/#", "devices/SN1/#", True, True),
        ("devices/SN1/+/#", "devices/SN1", False, False),
        ("devices/SN1/+", "devices/SN1/#", False, True),
        ("devices/SN1/secret", "devices/SN1/#", False, True),
        ("devices/+/telemetry", "devices/SN1/telemetry", True, True),
        ("devices/SN1/telemetry", "devices/+/telemetry", False, True),
        ("#", "$SYS/#", False, False),
        ("$SYS/#", "#", False, False),
        ("+/x", "+/x", True, True),
        ("a/#", "a", True, True),
        ("a", "a/#", False, True),
        ("groups/g1/#", "groups/g2/#", False, False),
    ],
)
def test_covers_and_overlaps_by_example(
    pattern: str, topic_filter: str, covered: bool, overlapping: bool
) -> None:
    assert covers(pattern, topic_filter) is covered
    assert overlaps(pattern, topic_filter) is overlapping


def test_variables_expand_per_group_and_attribute_and_never_widen() -> None:
    assert expand("groups/${group}/fw", serial="SN1", groups=["g1", "g2"]) == [
        "groups/g1/fw",
        "groups/g2/fw",
    ]
    assert expand("lines/${attr.line}/${serial}", serial="SN1", attributes={"line": "L7"}) == [
        "lines/L7/SN1"
    ]
    assert expand("lines/${attr.line}", serial="SN1") == []  # no value: nothing
    assert expand("groups/${group}", serial="SN1") == []
    for bad in ("+", "#", "a/b", "$x", ""):
        assert expand("devices/${serial}/x", serial=bad) == []
        assert expand("g/${group}", serial="S", groups=[bad]) == []
