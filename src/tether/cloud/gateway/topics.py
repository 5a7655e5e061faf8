"""MQTT 5 topic names and topic filters: validation and matching (spec section 4.7).

Pure functions over strings, so the policy and the broker agree on one reading of a topic.
"""

from __future__ import annotations

# The spec caps a UTF-8 string at 65535 bytes; the codec enforces that on the wire.
_FORBIDDEN = ("\x00",)
SHARED_PREFIX = "$share/"


def is_valid_topic_name(topic: str) -> bool:
    """A topic name a PUBLISH may carry: non-empty, no wildcards, no NUL."""
    if not topic or "+" in topic or "#" in topic:
        return False
    return not any(ch in topic for ch in _FORBIDDEN)


def is_valid_topic_filter(topic_filter: str) -> bool:
    """A topic filter a SUBSCRIBE may carry: '+' fills a whole level, '#' only as the last."""
    if not topic_filter or any(ch in topic_filter for ch in _FORBIDDEN):
        return False
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "+" in level and level != "+":
            return False
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return False
    return True


def is_shared_subscription(topic_filter: str) -> bool:
    """Whether the filter asks for a shared subscription (not supported by the gateway)."""
    return topic_filter.startswith(SHARED_PREFIX)


def has_wildcard(topic_filter: str) -> bool:
    """Whether a filter contains '+' or '#'."""
    return "+" in topic_filter or "#" in topic_filter


def matches(topic_filter: str, topic: str) -> bool:
    """Whether a valid filter matches a valid topic name.

    Wildcards at the first level never match topics starting with '$' (spec 4.7.2), and
    'a/#' also matches 'a' (spec 4.7.1.2).
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)
