"""Resource patterns against topics and filters, and the variables in them.

A resource is an MQTT topic filter (after its variables are substituted). Against a topic
*name* (publish, or receive of one message) it applies exactly when MQTT would deliver that
name to it (spec 4.7, the same reading as :func:`tether.cloud.gateway.topics.matches` and
paho-mqtt's ``topic_matches_sub``). Against a client's topic *filter* (subscribe, receive)
the two effects read it differently, so that deny always wins:

- an **allow** applies when the pattern *covers* the filter: every topic the filter can match
  is matched by the pattern. One reading choice: a filter ending in ``/#`` is judged by the
  levels below its parent (``devices/SN1/#`` is covered by ``devices/SN1/+/#``), although MQTT
  also delivers the parent topic ``devices/SN1`` to it. That is what lets the built-in default
  keep today's rule (``devices/<serial>/#`` allowed, the bare ``devices/<serial>`` refused); a
  deny is the way to be strict about a parent;
- a **deny** applies when the pattern *overlaps* the filter: some topic matches both. A deny on
  ``devices/SN1/secret`` therefore refuses ``devices/SN1/#``: a subscription never receives
  a topic a deny names.

Variables: ``${serial}`` is the identity's name, ``${group}`` each of the device's groups (one
expansion per group), ``${attr.<name>}`` a device attribute. A value that is not one safe
topic level (empty, or containing ``/ + # $`` or NUL) never substitutes, and a resource whose
variable has no value expands to nothing: its statement does not apply (neither allows nor
denies), as with AWS IoT policy variables. Groups and attribute values are checked with
:data:`VALUE_PATTERN` when they are written, so this only guards against a bad identity name.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence

from tether.cloud.policy.document import VARIABLE

SINGLE = "+"
MULTI = "#"
# What a group name or attribute value may be: one topic level, no wildcard, no '$' start.
VALUE_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_UNSAFE = frozenset("/+#\x00$")


def safe_value(value: str) -> bool:
    """Whether ``value`` may be substituted into a topic pattern as (part of) one level."""
    return bool(value) and not any(ch in _UNSAFE for ch in value)


def expand(
    resource: str,
    *,
    serial: str,
    groups: Sequence[str] = (),
    attributes: Mapping[str, str] | None = None,
) -> list[str]:
    """Every concrete pattern ``resource`` stands for (empty when a variable has no value)."""
    names = list(dict.fromkeys(VARIABLE.findall(resource)))
    if not names:
        return [resource]
    attributes = attributes or {}
    choices: list[list[str]] = []
    for name in names:
        if name == "serial":
            values = [serial]
        elif name == "group":
            values = list(groups)
        else:
            value = attributes.get(name.removeprefix("attr."))
            values = [] if value is None else [value]
        values = [v for v in values if safe_value(v)]
        if not values:
            return []
        choices.append(values)
    expanded = []
    for combination in itertools.product(*choices):
        table = dict(zip(names, combination, strict=True))
        expanded.append(VARIABLE.sub(lambda m, t=table: t[m.group(1)], resource))
    return expanded


def _dollar_split(p: Sequence[str], f: Sequence[str]) -> bool:
    """A wildcard first level never matches a '$' topic (spec 4.7.2): no topic in common."""
    p_wild = p[0] in (SINGLE, MULTI)
    f_wild = f[0] in (SINGLE, MULTI)
    return (p_wild and not f_wild and f[0].startswith("$")) or (
        f_wild and not p_wild and p[0].startswith("$")
    )


def covers(pattern: str, topic_filter: str) -> bool:
    """Whether every topic ``topic_filter`` matches is matched by ``pattern`` (see above).

    For a topic name (no wildcards) this is exactly MQTT matching. Both must be valid.
    """
    return covers_levels(pattern.split("/"), topic_filter.split("/"))


def overlaps(pattern: str, topic_filter: str) -> bool:
    """Whether some topic is matched by both ``pattern`` and ``topic_filter`` (strictly).

    For a topic name this is exactly MQTT matching. Both must be valid.
    """
    return overlaps_levels(pattern.split("/"), topic_filter.split("/"))


def covers_levels(p: Sequence[str], f: Sequence[str]) -> bool:
    """:func:`covers` on levels already split (the evaluator splits each pattern once)."""
    if _dollar_split(p, f):
        return False
    p_len = len(p)
    f_len = len(f)
    i = 0
    while True:
        if i < p_len and p[i] == MULTI:
            return True
        if i == f_len:
            return i == p_len
        if f[i] == MULTI:
            # One or more levels below the parent (the parent itself: see the module doc).
            return p_len == i + 2 and p[i] == SINGLE and p[i + 1] == MULTI
        if i == p_len:
            return False
        if p[i] != SINGLE and p[i] != f[i]:
            return False
        i += 1


def overlaps_levels(p: Sequence[str], f: Sequence[str]) -> bool:
    """:func:`overlaps` on levels already split."""
    if _dollar_split(p, f):
        return False
    p_len = len(p)
    f_len = len(f)
    i = 0
    while True:
        p_end = i == p_len
        f_end = i == f_len
        if (not p_end and p[i] == MULTI) or (not f_end and f[i] == MULTI):
            return True
        if p_end or f_end:
            return p_end and f_end
        if p[i] != SINGLE and f[i] != SINGLE and p[i] != f[i]:
            return False
        i += 1


def client_matches(pattern: str, client_id: str) -> bool:
    """A connect/enroll resource (one level) against a client id: ``+``/``#`` match any."""
    return pattern in (SINGLE, MULTI) or pattern == client_id
