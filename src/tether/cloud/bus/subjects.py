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

``a/#`` matches ``a`` in MQTT but ``a.>`` does not match ``a`` in NATS, so a filter gives
one or two subjects (:func:`filter_subjects`). A NATS subscription is only ever used as a
superset: the worker that receives a message still matches it against its own topic tree
(MQTT's rules, ``$`` topics and all), so the bus never decides who gets what.
"""

from __future__ import annotations

import re

PREFIX = "mqtt"  # every routed message lives under mqtt.<levels...>
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


def topic_subject(topic: str) -> str:
    """The NATS subject a message published on ``topic`` is sent to."""
    return ".".join((PREFIX, *(encode_level(level) for level in topic.split("/"))))


def subject_topic(subject: str) -> str:
    """The MQTT topic of a subject made by :func:`topic_subject`."""
    tokens = subject.split(".")
    if len(tokens) < 2 or tokens[0] != PREFIX:
        raise ValueError(f"not a Tether message subject: {subject!r}")
    return "/".join(decode_level(token) for token in tokens[1:])


def filter_subjects(topic_filter: str) -> tuple[str, ...]:
    """The NATS subjects whose union covers every topic ``topic_filter`` matches.

    ``a/#`` gives ``mqtt.a.>`` and ``mqtt.a`` (MQTT's ``#`` also matches its parent level);
    ``#`` alone gives ``mqtt.>``.
    """
    levels = topic_filter.split("/")
    tokens = [
        "*" if level == "+" else ">" if level == "#" else encode_level(level) for level in levels
    ]
    subject = ".".join((PREFIX, *tokens))
    if levels[-1] == "#" and len(levels) > 1:
        return (subject, ".".join((PREFIX, *tokens[:-1])))
    return (subject,)
