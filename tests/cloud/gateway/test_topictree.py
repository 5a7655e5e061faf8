"""The topic tree against a reference matcher (paho-mqtt's ``topic_matches_sub``).

Topics and filters are generated from a small alphabet of levels so that they collide often:
empty levels, ``$``-levels, Unicode, ``+`` anywhere, ``#`` last. The tree must yield exactly
the filters the reference matches, across adds and removes, and forget what was removed.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from tether.cloud.gateway.topics import is_valid_topic_filter, is_valid_topic_name, matches
from tether.cloud.gateway.topictree import MATCH_CACHE_SIZE, TopicTree

LEVELS = st.sampled_from(["", "a", "b", "ab", "$SYS", "$x", "é", "日本", "devices", "SN0001"])
TOPICS = st.lists(LEVELS, min_size=1, max_size=5).map("/".join).filter(is_valid_topic_name)
FILTER_LEVELS = st.one_of(LEVELS, st.just("+"))


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(FILTER_LEVELS, min_size=0, max_size=5))
    if draw(st.booleans()) or not levels:
        levels.append("#")
    return "/".join(levels)


FILTERS = topic_filters().filter(is_valid_topic_filter)  # drops "" (one empty level)


def matched(tree: TopicTree[str, str], topic: str) -> set[tuple[str, str]]:
    return set(tree.match(topic))


@settings(max_examples=400)
@given(st.lists(FILTERS, max_size=12), TOPICS)
def test_tree_matches_what_the_reference_matches(filters: list[str], topic: str) -> None:
    tree: TopicTree[str, str] = TopicTree()
    for topic_filter in filters:
        tree.add(topic_filter, "s", topic_filter)
    expected = {("s", f) for f in filters if topic_matches_sub(f, topic)}
    assert matched(tree, topic) == expected


@settings(max_examples=400)
@given(FILTERS, TOPICS)
def test_reference_and_our_single_matcher_agree(topic_filter: str, topic: str) -> None:
    assert matches(topic_filter, topic) is topic_matches_sub(topic_filter, topic)


@settings(max_examples=300)
@given(
    st.lists(st.tuples(FILTERS, st.sampled_from(["s1", "s2", "s3"])), max_size=15),
    st.data(),
    st.lists(TOPICS, min_size=1, max_size=5),
)
def test_removes_keep_the_tree_equal_to_what_remains(
    entries: list[tuple[str, str]], data: st.DataObject, topics: list[str]
) -> None:
    tree: TopicTree[str, str] = TopicTree()
    for topic_filter, key in entries:
        tree.add(topic_filter, key, topic_filter)
    unique = sorted(set(entries))
    removed = data.draw(st.lists(st.sampled_from(unique), unique=True) if unique else st.just([]))
    for topic_filter, key in removed:
        assert tree.remove(topic_filter, key)
        assert not tree.remove(topic_filter, key)
    remaining = set(unique) - set(removed)
    assert len(tree) == len(remaining)
    for topic in topics:
        expected = {(key, f) for f, key in remaining if topic_matches_sub(f, topic)}
        assert matched(tree, topic) == expected


@given(st.lists(st.tuples(FILTERS, st.sampled_from(["s1", "s2"])), max_size=10))
def test_removing_everything_leaves_an_empty_tree(entries: list[tuple[str, str]]) -> None:
    tree: TopicTree[str, str] = TopicTree()
    for topic_filter, key in entries:
        tree.add(topic_filter, key, topic_filter)
    for topic_filter, key in set(entries):
        tree.remove(topic_filter, key)
    assert len(tree) == 0
    assert tree._root.children == {}  # pruned, not just emptied


def test_adding_again_replaces_and_counts_once() -> None:
    tree: TopicTree[str, int] = TopicTree()
    assert tree.add("a/+", "s", 0) is False
    assert tree.add("a/+", "s", 1) is True
    assert len(tree) == 1
    assert list(tree.match("a/b")) == [("s", 1)]


def test_dollar_topics_and_parent_of_hash() -> None:
    tree: TopicTree[str, str] = TopicTree()
    for topic_filter in ("#", "+/x", "$SYS/#", "a/#", "+/+"):
        tree.add(topic_filter, "s", topic_filter)
    assert {v for _, v in tree.match("$SYS/x")} == {"$SYS/#"}
    assert {v for _, v in tree.match("a")} == {"#", "a/#"}
    assert {v for _, v in tree.match("a//")} == {"#", "a/#"}
    assert {v for _, v in tree.match("b/x")} == {"#", "+/x", "+/+"}


def test_many_filters_under_one_subtree_are_not_visited_for_another_topic() -> None:
    tree: TopicTree[str, str] = TopicTree()
    for index in range(10_000):
        tree.add(f"devices/SN0001/f{index}", "attacker", "x")
    tree.add("devices/SN0002/telemetry", "victim", "y")
    # Walked: root -> devices -> SN0002 -> telemetry. No list of 10,000 is looked at.
    assert list(tree.match("devices/SN0002/telemetry")) == [("victim", "y")]
    assert len(tree._root.children["devices"].children) == 2


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.booleans(), FILTERS, st.sampled_from(["s1", "s2"]), TOPICS), max_size=20)
)
def test_the_remembered_matches_follow_every_add_and_remove(
    steps: list[tuple[bool, str, str, str]],
) -> None:
    """``matching`` (the routing cache) answers what ``match`` answers after any change."""
    tree: TopicTree[str, str] = TopicTree()
    for add, topic_filter, key, topic in steps:
        tree.matching(topic)  # remember an answer the change may make stale
        if add:
            tree.add(topic_filter, key, topic_filter + key)
        else:
            tree.remove(topic_filter, key)
        assert set(tree.matching(topic)) == matched(tree, topic)
        assert tree.matching(topic) is tree.matching(topic)  # remembered, not walked again


def test_the_remembered_matches_are_bounded() -> None:
    tree: TopicTree[str, str] = TopicTree()
    tree.add("#", "s", "all")
    for n in range(MATCH_CACHE_SIZE + 10):
        assert tree.matching(f"t/{n}") == (("s", "all"),)
    assert len(tree._matches) <= MATCH_CACHE_SIZE
