"""Policy documents: allow and deny statements over actions and topic patterns.

A document is JSON (the schema, :data:`POLICY_SCHEMA`, is published with the API at
``GET /api/v1/policies/schema``)::

    {"version": "1",
     "statements": [
       {"sid": "own-telemetry", "effect": "allow", "actions": ["publish"],
        "resources": ["devices/${serial}/telemetry"]},
       {"sid": "no-firmware", "effect": "deny", "actions": ["subscribe", "receive"],
        "resources": ["groups/${group}/firmware/#"]}]}

- ``actions``: ``connect``, ``enroll`` (their resources are client ids, matched as one topic
  level, ``+`` for any; omitted means any) and ``publish``, ``subscribe``, ``receive`` (their
  resources are MQTT topic filters, required). A statement does not mix the two kinds: a
  resource would mean two different things.
- ``resources`` may use the variables ``${serial}`` (the identity's name: a device serial or
  a service name), ``${group}`` (each group of the device, one expansion per group) and
  ``${attr.<name>}`` (a device attribute). After removing them a resource must be a valid MQTT
  topic filter; shared subscriptions (``$share/...``) are not resources.
- ``sid``: optional statement id, unique in the document; a statement without one is named by
  its position (``#2``) in explanations and errors.

Parsing is the one gate: :func:`parse_document` returns a frozen :class:`PolicyDocument` or
raises :class:`InvalidPolicyError` whose message names the offending statement, and nothing
else in Tether reads policy JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tether.cloud.gateway.topics import is_shared_subscription, is_valid_topic_filter
from tether.errors import InvalidInputError

MAX_DOCUMENT_BYTES = 64 * 1024
MAX_STATEMENTS = 100
MAX_RESOURCES = 50
MAX_RESOURCE_LENGTH = 1024
DOCUMENT_VERSION = "1"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
VARIABLE = re.compile(r"\$\{([^}]*)\}")
ATTRIBUTE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


class InvalidPolicyError(InvalidInputError):
    """A policy document that fails validation; the message names the statement."""

    code = "policy_invalid"


class Effect(StrEnum):
    """What a statement does when it applies; a deny always wins over an allow."""

    ALLOW = "allow"
    DENY = "deny"


class Action(StrEnum):
    """What an identity asks to do."""

    CONNECT = "connect"
    ENROLL = "enroll"
    PUBLISH = "publish"
    SUBSCRIBE = "subscribe"
    RECEIVE = "receive"


CLIENT_ACTIONS = frozenset({Action.CONNECT, Action.ENROLL})
TOPIC_ACTIONS = frozenset({Action.PUBLISH, Action.SUBSCRIBE, Action.RECEIVE})


@dataclass(frozen=True, slots=True)
class Statement:
    """One allow or deny over some actions and resource patterns (variables unresolved)."""

    sid: str
    effect: Effect
    actions: frozenset[Action]
    resources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """A validated policy document."""

    statements: tuple[Statement, ...]
    version: str = DOCUMENT_VERSION

    def to_json(self) -> dict[str, Any]:
        """The document as JSON data (what :func:`parse_document` reads back)."""
        return {
            "version": self.version,
            "statements": [
                # A positional name ("#2") is not a sid: it is given again on parsing.
                ({} if s.sid.startswith("#") else {"sid": s.sid})
                | {
                    "effect": s.effect.value,
                    "actions": sorted(a.value for a in s.actions),
                    "resources": list(s.resources),
                }
                for s in self.statements
            ],
        }

    def canonical(self) -> str:
        """Compact, key-sorted JSON: what the registry stores."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))


POLICY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://tether.invalid/schemas/policy-1.json",
    "title": "Tether policy document",
    "type": "object",
    "additionalProperties": False,
    "required": ["statements"],
    "properties": {
        "version": {"const": DOCUMENT_VERSION},
        "statements": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_STATEMENTS,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["effect", "actions"],
                "properties": {
                    "sid": {"type": "string", "pattern": f"^{_SID.pattern}$"},
                    "effect": {"enum": [e.value for e in Effect]},
                    "actions": {
                        "type": "array",
                        "minItems": 1,
                        "uniqueItems": True,
                        "items": {"enum": [a.value for a in Action]},
                    },
                    "resources": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_RESOURCES,
                        "items": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_RESOURCE_LENGTH,
                        },
                    },
                },
            },
        },
    },
}


def parse_document(data: str | bytes | Mapping[str, Any]) -> PolicyDocument:
    """Validate JSON text or data into a :class:`PolicyDocument`.

    Raises :class:`InvalidPolicyError` naming the statement (``statement "sid"`` or
    ``statement #n``) and what is wrong with it; nothing is partially accepted.
    """
    if isinstance(data, str | bytes):
        if len(data) > MAX_DOCUMENT_BYTES:
            raise InvalidPolicyError(f"A policy document is at most {MAX_DOCUMENT_BYTES} bytes.")
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidPolicyError(f"A policy document must be JSON: {exc}.") from None
    if not isinstance(data, Mapping):
        raise InvalidPolicyError('A policy document is a JSON object with "statements".')
    unknown = set(data) - {"version", "statements"}
    if unknown:
        raise InvalidPolicyError(f"Unknown policy document keys: {', '.join(sorted(unknown))}.")
    version = data.get("version", DOCUMENT_VERSION)
    if version != DOCUMENT_VERSION:
        raise InvalidPolicyError(f'Policy document version must be "{DOCUMENT_VERSION}".')
    raw = data.get("statements")
    if not isinstance(raw, list) or not raw:
        raise InvalidPolicyError('"statements" must be a non-empty list.')
    if len(raw) > MAX_STATEMENTS:
        raise InvalidPolicyError(f"A policy has at most {MAX_STATEMENTS} statements.")
    statements: list[Statement] = []
    seen: set[str] = set()
    for index, item in enumerate(raw, start=1):
        statement = _statement(index, item)
        if statement.sid in seen:
            raise InvalidPolicyError(f"statement #{index}: sid {statement.sid!r} is used twice.")
        seen.add(statement.sid)
        statements.append(statement)
    return PolicyDocument(tuple(statements))


def _statement(index: int, item: object) -> Statement:
    where = f"statement #{index}"
    if not isinstance(item, Mapping):
        raise InvalidPolicyError(f"{where}: a statement is a JSON object.")
    sid = item.get("sid")
    if sid is not None:
        if not isinstance(sid, str) or not _SID.fullmatch(sid):
            raise InvalidPolicyError(
                f"{where}: sid must be 1 to 64 characters of A-Z a-z 0-9 . _ -."
            )
        where = f'statement "{sid}"'
    unknown = set(item) - {"sid", "effect", "actions", "resources"}
    if unknown:
        raise InvalidPolicyError(f"{where}: unknown keys {', '.join(sorted(unknown))}.")
    try:
        effect = Effect(item.get("effect"))
    except ValueError:
        raise InvalidPolicyError(f'{where}: effect must be "allow" or "deny".') from None
    actions_raw = item.get("actions")
    if not isinstance(actions_raw, list) or not actions_raw:
        raise InvalidPolicyError(f"{where}: actions must be a non-empty list.")
    try:
        actions = frozenset(Action(a) for a in actions_raw)
    except ValueError:
        allowed = ", ".join(a.value for a in Action)
        raise InvalidPolicyError(f"{where}: actions are among {allowed}.") from None
    if actions & CLIENT_ACTIONS and actions & TOPIC_ACTIONS:
        raise InvalidPolicyError(
            f"{where}: connect/enroll (client ids) and publish/subscribe/receive (topics) "
            "go in separate statements."
        )
    resources_raw = item.get("resources")
    if resources_raw is None:
        if actions & TOPIC_ACTIONS:
            raise InvalidPolicyError(f"{where}: publish/subscribe/receive need resources.")
        resources_raw = ["+"]
    if not isinstance(resources_raw, list) or not resources_raw:
        raise InvalidPolicyError(f"{where}: resources must be a non-empty list.")
    if len(resources_raw) > MAX_RESOURCES:
        raise InvalidPolicyError(f"{where}: at most {MAX_RESOURCES} resources.")
    client = bool(actions & CLIENT_ACTIONS)
    resources = tuple(_resource(where, r, client=client) for r in resources_raw)
    return Statement(sid or f"#{index}", effect, actions, resources)


def _resource(where: str, resource: object, *, client: bool) -> str:
    if not isinstance(resource, str) or not 0 < len(resource) <= MAX_RESOURCE_LENGTH:
        raise InvalidPolicyError(
            f"{where}: a resource is a string of 1 to {MAX_RESOURCE_LENGTH} characters."
        )
    for name in VARIABLE.findall(resource):
        if name not in ("serial", "group") and not (
            name.startswith("attr.") and ATTRIBUTE_NAME.fullmatch(name[5:])
        ):
            raise InvalidPolicyError(
                f"{where}: unknown variable ${{{name}}} in {resource!r}; use ${{serial}}, "
                "${group} or ${attr.<name>} (name: a-z 0-9 _ -)."
            )
    bare = VARIABLE.sub("x", resource)
    if "${" in bare:
        raise InvalidPolicyError(f"{where}: unterminated variable in {resource!r}.")
    if not is_valid_topic_filter(bare) or is_shared_subscription(bare):
        raise InvalidPolicyError(
            f"{where}: {resource!r} is not a valid MQTT topic filter ('+' fills a level, "
            "'#' only last; no shared subscriptions)."
        )
    if client and "/" in bare:
        raise InvalidPolicyError(
            f"{where}: connect/enroll resources are client ids (one level), not {resource!r}."
        )
    return resource
