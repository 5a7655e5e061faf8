"""Policies: who may connect, publish, subscribe, receive and enroll, as data.

``document`` (the JSON model, its schema and the one validation), ``patterns`` (resources
against topics and filters, variables), ``evaluate`` (deny wins, no statement no access, the
statement that decided), ``builtin`` (today's fixed rules as the default documents),
``resolve`` (which policies apply to an identity, from a registry snapshot) and ``live``
(the gateway's policy over the registry, and re-evaluating live sessions on a change).
"""

# The gateway's topic policy is built on this package and this package on the gateway's topic
# grammar (``gateway.topics``): load the gateway first, whichever side is imported first.
import tether.cloud.gateway  # noqa: F401  (import order, see above)
from tether.cloud.policy.builtin import BUILTIN, BUILTIN_DEVICE, BUILTIN_SERVICE
from tether.cloud.policy.document import (
    POLICY_SCHEMA,
    Action,
    Effect,
    InvalidPolicyError,
    PolicyDocument,
    Statement,
    parse_document,
)
from tether.cloud.policy.evaluate import Decision, Evaluator, NamedPolicy, Subject, evaluate

__all__ = [
    "BUILTIN",
    "BUILTIN_DEVICE",
    "BUILTIN_SERVICE",
    "POLICY_SCHEMA",
    "Action",
    "Decision",
    "Effect",
    "Evaluator",
    "InvalidPolicyError",
    "NamedPolicy",
    "PolicyDocument",
    "Statement",
    "Subject",
    "evaluate",
    "parse_document",
]
