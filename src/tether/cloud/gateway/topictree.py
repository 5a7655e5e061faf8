"""A topic tree: which subscriptions match a topic, without scanning every filter.

Filters are stored in a trie keyed by topic level; ``+`` and ``#`` are ordinary child names
of a node (a valid topic *name* never contains them, so they cannot collide with a literal
level). Matching a topic walks one literal child per level plus the ``+`` and ``#`` children
on the way, so its cost grows with the topic's depth and the number of wildcard branches that
really match, not with the number of filters stored: one client with thousands of filters
under ``devices/<serial>/...`` costs nothing to a publish on ``devices/<other>/...``.

Matching follows MQTT 5 section 4.7 exactly (and agrees with paho-mqtt's
``topic_matches_sub``, which the property tests use as the reference): ``a/#`` also matches
``a``; ``+`` matches one level, including an empty one; a topic starting with ``$`` is not
matched by a filter whose first level is ``+`` or ``#``. Filters and topics are assumed valid
(see :mod:`tether.cloud.gateway.topics`). Not thread-safe: the gateway uses it from its event
loop only.

``matching(topic)`` is ``match`` remembered (issue 17, messages hot path): a device publishes
to the same few topics again and again, so the answer per topic name is kept until the tree
changes (any ``add`` or ``remove`` forgets every answer), for at most ``MATCH_CACHE_SIZE``
topics (then it starts over). A publish to a known topic costs one dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

SINGLE = "+"
MULTI = "#"
MATCH_CACHE_SIZE = 4096  # topic names whose matches are remembered


class _Node(Generic[K, V]):
    """One level: its children by level name and the values of filters ending here."""

    __slots__ = ("children", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node[K, V]] = {}
        self.values: dict[K, V] = {}


class TopicTree(Generic[K, V]):
    """Values stored under (topic filter, key); ``match(topic)`` yields every matching one.

    A key (the gateway uses the subscribing session) holds at most one value per filter;
    adding again replaces it.
    """

    def __init__(self) -> None:
        self._root: _Node[K, V] = _Node()
        self._size = 0
        self._matches: dict[str, tuple[tuple[K, V], ...]] = {}

    def __len__(self) -> int:
        """How many (filter, key) entries are stored."""
        return self._size

    def add(self, topic_filter: str, key: K, value: V) -> bool:
        """Store ``value`` for ``key`` under ``topic_filter``; ``True`` if it replaced one."""
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        replaced = key in node.values
        node.values[key] = value
        self._matches.clear()
        if not replaced:
            self._size += 1
        return replaced

    def remove(self, topic_filter: str, key: K) -> bool:
        """Forget ``key``'s entry under ``topic_filter``; ``True`` if there was one.

        Nodes left without values or children are pruned, so the tree's size follows what is
        stored, not what was ever stored.
        """
        path: list[tuple[_Node[K, V], str]] = []
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if key not in node.values:
            return False
        del node.values[key]
        self._size -= 1
        self._matches.clear()
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.values or child.children:
                break
            del parent.children[level]
        return True

    def matching(self, topic: str) -> tuple[tuple[K, V], ...]:
        """``match(topic)`` as a tuple, remembered until the tree changes (module docstring)."""
        found = self._matches.get(topic)
        if found is None:
            if len(self._matches) >= MATCH_CACHE_SIZE:
                self._matches.clear()
            found = self._matches[topic] = tuple(self.match(topic))
        return found

    def match(self, topic: str) -> Iterator[tuple[K, V]]:
        """Every (key, value) whose filter matches topic name ``topic``.

        A key appears once per matching filter (a session subscribed with ``a/+`` and ``a/#``
        appears twice for ``a/b``); the broker folds those into one delivery.
        """
        levels = topic.split("/")
        depth = len(levels)
        # Wildcards in the first level never match a '$' topic (spec 4.7.2).
        dollar = topic.startswith("$")
        stack: list[tuple[_Node[K, V], int]] = [(self._root, 0)]
        while stack:
            node, index = stack.pop()
            wildcards = index > 0 or not dollar
            if wildcards:
                multi = node.children.get(MULTI)
                if multi is not None:
                    # '#' matches the rest, including nothing: 'a/#' matches 'a'.
                    yield from multi.values.items()
            if index == depth:
                yield from node.values.items()
                continue
            literal = node.children.get(levels[index])
            if literal is not None:
                stack.append((literal, index + 1))
            if wildcards:
                single = node.children.get(SINGLE)
                if single is not None:
                    stack.append((single, index + 1))
