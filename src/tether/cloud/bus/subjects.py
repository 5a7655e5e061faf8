"""MQTT topics as NATS subjects, reversibly: one level, one token.

NATS splits a subject at ``.`` and forbids whitespace and empty tokens; a token that is
exactly ``*`` or ``>`` is a wildcard, and a leading ``$`` marks the server's own subjects
(``$SYS``, ``$JS``). An MQTT level may hold any of those (anything but ``/``, ``+``, ``#`` and
NUL), so each level is encoded on its own:

- a level of only ``[A-Za-z0-9_-]`` characters is kept as it is (the common case: readable
  subjects in ``nats sub`` and cheap to compute);
- any other byte of the level's UTF-8 is written ``%XX`` (upper-case hex), ``%`` itself
  included, so decoding is unambiguous;
- the empty level becomes the lone token ``%``, which no escape produces;
- in a filter, ``+`` becomes ``*`` and a final ``#`` becomes ``>`` (as nats-server's own MQTT
  layer maps them).

Shared subscriptions (``$share/<group>/<filter>``, issue 17) use the same encoding under
their own prefixes: every routed message is also published once to
:func:`shared_topic_subject`, where each worker holding members of a group subscribes with a
NATS *queue group* named by :func:`shared_queue` (the group and the filter, each level
encoded as above, wildcards included as ``%2B``/``%23``: reversible by
:func:`parse_shared_queue`), so NATS hands the copy to one worker per group; a worker whose
members all dropped it passes it on to :func:`passed_subject` of that queue only.

``a/#`` matches ``a`` in MQTT but ``a.>`` does not match ``a`` in NATS, so a filter gives
one or two subjects (:func:`filter_subjects`). A NATS subscription is only ever used as a
superset: the worker that receives a message still matches it against its own topic tree
(MQTT's rules, ``$`` topics and all), so the bus never decides who gets what.
"""

from __future__ import annotations

import re

PREFIX = "mqtt"  # every routed message lives under mqtt.<levels...>
SHARED_PREFIX = "tether.shared"  # the one copy of each message for shared subscriptions
PASSED_PREFIX = "tether.passed"  # a shared copy passed on to one queue group
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
EMPTY_LEVEL = "%"


def encode_level(level: str) -> str:
    """One MQTT topic level as one NATS token (see the module docstring)."""
    if not level:
        return EMPTY_LEVEL
    if _PLAIN.fullmatch(level):
        return level
    out: list[str] = []
    for char in level:
        if char.isascii() and (char.isalnum() or char in "_-"):
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def decode_level(token: str) -> str:
    """The inverse of :func:`encode_level`."""
    if token == EMPTY_LEVEL:
        return ""
    if "%" not in token:
        return token
    raw = bytearray()
    index = 0
    while index < len(token):
        if token[index] == "%":
            raw.append(int(token[index + 1 : index + 3], 16))
            index += 3
        else:
            raw.extend(token[index].encode("ascii"))
            index += 1
    return raw.decode("utf-8")


def topic_subject(topic: str, prefix: str = PREFIX) -> str:
    """The NATS subject a message published on ``topic`` is sent to."""
    return ".".join((prefix, *(encode_level(level) for level in topic.split("/"))))


def shared_topic_subject(topic: str) -> str:
    """The subject of a message's one copy for the cluster's shared subscriptions."""
    return topic_subject(topic, SHARED_PREFIX)


def subject_topic(subject: str) -> str:
    """The MQTT topic of a subject made by :func:`topic_subject`."""
    tokens = subject.split(".")
    if len(tokens) < 2 or tokens[0] != PREFIX:
        raise ValueError(f"not a Tether message subject: {subject!r}")
    return "/".join(decode_level(token) for token in tokens[1:])


def filter_subjects(topic_filter: str, prefix: str = PREFIX) -> tuple[str, ...]:
    """The NATS subjects whose union covers every topic ``topic_filter`` matches.

    ``a/#`` gives ``mqtt.a.>`` and ``mqtt.a`` (MQTT's ``#`` also matches its parent level);
    ``#`` alone gives ``mqtt.>``.
    """
    levels = topic_filter.split("/")
    tokens = [
        "*" if level == "+" else ">" if level == "#" else encode_level(level) for level in levels
    ]
    subject = ".".join((prefix, *tokens))
    if levels[-1] == "#" and len(levels) > 1:
        return (subject, ".".join((prefix, *tokens[:-1])))
    return (subject,)


def shared_filter_subjects(topic_filter: str) -> tuple[str, ...]:
    """The shared-copy subjects a group on ``topic_filter`` subscribes to (queue group)."""
    return filter_subjects(topic_filter, SHARED_PREFIX)


def shared_queue(group: str, topic_filter: str) -> str:
    """The NATS queue group of ``$share/<group>/<topic_filter>``: one name per (group, filter).

    The filter is part of the name because ``$share/g/a/+`` and ``$share/g/a/#`` are two
    shared subscriptions (each gets its own copy, MQTT 5 4.8.2).
    """
    return ".".join(encode_level(level) for level in (group, *topic_filter.split("/")))


def parse_shared_queue(queue: str) -> tuple[str, str]:
    """The inverse of :func:`shared_queue`: ``(group, filter)``."""
    group, *levels = (decode_level(token) for token in queue.split("."))
    if not levels:
        raise ValueError(f"not a shared queue name: {queue!r}")
    return group, "/".join(levels)


def passed_subject(queue: str) -> str:
    """Where a worker passes a shared copy on to the other members of one queue group."""
    return f"{PASSED_PREFIX}.{queue}"
