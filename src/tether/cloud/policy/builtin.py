"""The built-in default policies: today's fixed topic rules, written as policy documents.

An identity with no policy attached (to it, its groups or its CA) is judged by the built-in
document of its kind, so nothing changes until an operator writes and attaches a policy:

- a device connects, enrolls (renews) only its own serial, and publishes, subscribes and
  receives only under ``devices/<serial>/<something>`` (wildcards inside its subtree, never
  across devices);
- a service connects, subscribes to and receives any filter under ``devices/`` (at least two
  levels), and publishes only ``devices/<serial>/commands/<...>`` with a non-empty serial;
- an enroll-only identity (a claim certificate, or a birth certificate in its grace period
  after enrolling) connects and may ``enroll`` (any serial: the claim's own record limits
  which) and nothing else: its requests go on the
  reserved ``$tether/`` topics, which the gateway answers before any topic policy. No
  attachment applies to it (see ``resolve.Resolver.subject``).

The equivalence with the original hand-written rules is a property test
(``tests/cloud/policy/test_builtin.py``). ``tether policy builtin`` prints these documents
as a starting point for an operator's own.
"""

from __future__ import annotations

from tether.cloud.policy.document import PolicyDocument, parse_document

BUILTIN_PREFIX = "builtin:"
BUILTIN_DEVICE = "builtin:device"
BUILTIN_SERVICE = "builtin:service"
BUILTIN_CLAIM = "builtin:claim"

_DEVICE = {
    "version": "1",
    "statements": [
        {"sid": "connect", "effect": "allow", "actions": ["connect"], "resources": ["${serial}"]},
        {"sid": "renew-self", "effect": "allow", "actions": ["enroll"], "resources": ["${serial}"]},
        {
            "sid": "own-subtree",
            "effect": "allow",
            "actions": ["publish", "subscribe", "receive"],
            "resources": ["devices/${serial}/+/#"],
        },
    ],
}

_SERVICE = {
    "version": "1",
    "statements": [
        {"sid": "connect", "effect": "allow", "actions": ["connect"], "resources": ["${serial}"]},
        {
            "sid": "read-devices",
            "effect": "allow",
            "actions": ["subscribe", "receive"],
            "resources": ["devices/+/#"],
        },
        {
            "sid": "command-devices",
            "effect": "allow",
            "actions": ["publish"],
            "resources": ["devices/+/commands/+/#"],
        },
        {
            "sid": "no-empty-serial",
            "effect": "deny",
            "actions": ["publish"],
            "resources": ["devices//#"],
        },
    ],
}

_CLAIM = {
    "version": "1",
    "statements": [
        {"sid": "connect", "effect": "allow", "actions": ["connect"], "resources": ["${serial}"]},
        # Any serial: the claim's own record (serials, count, expiry) says which, checked in
        # the enroll operation and again in its write transaction.
        {"sid": "enroll-only", "effect": "allow", "actions": ["enroll"], "resources": ["+"]},
    ],
}

BUILTIN: dict[str, PolicyDocument] = {
    BUILTIN_DEVICE: parse_document(_DEVICE),
    BUILTIN_SERVICE: parse_document(_SERVICE),
    BUILTIN_CLAIM: parse_document(_CLAIM),
}


def builtin_for(kind: str) -> str:
    """The built-in policy name for an identity kind (``device``, ``service`` or ``claim``)."""
    return {"service": BUILTIN_SERVICE, "claim": BUILTIN_CLAIM}.get(kind, BUILTIN_DEVICE)
