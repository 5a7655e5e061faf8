"""Which policies apply to an identity, from a registry snapshot.

A device is judged by the policies attached to it, to each of its groups and to the CA that
issued its certificate; a service by those attached to its name and to its CA. All of them
apply together (deny wins across policies, as with AWS IoT's thing, thing-group and
certificate policies): a CA attachment is a default for everything the CA issued, and a deny
in it binds every such identity. With nothing attached, the built-in default of the identity's
kind applies, so nothing changes until an operator attaches a policy.

A stored document that no longer parses (it was validated when written, so only a downgrade
could cause this) makes its identities fail closed: they get a policy that denies everything,
and the error is logged, rather than silently losing that policy's denies.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from tether.cloud.policy.builtin import BUILTIN, BUILTIN_CLAIM, builtin_for
from tether.cloud.policy.document import (
    Action,
    Effect,
    InvalidPolicyError,
    PolicyDocument,
    Statement,
    parse_document,
)
from tether.cloud.policy.evaluate import NamedPolicy, Subject
from tether.cloud.registry.policies import PolicySnapshot, TargetKind

log = logging.getLogger("tether.policy")

DENY_ALL = PolicyDocument(
    (
        Statement(
            "unreadable-policy", Effect.DENY, frozenset({Action.CONNECT, Action.ENROLL}), ("+",)
        ),
        Statement(
            "unreadable-policy-topics",
            Effect.DENY,
            frozenset({Action.PUBLISH, Action.SUBSCRIBE, Action.RECEIVE}),
            ("#", "$#"),
        ),
    )
)


class Resolver:
    """Subjects for identities, from one :class:`PolicySnapshot` (immutable once built)."""

    def __init__(self, snapshot: PolicySnapshot) -> None:
        self.snapshot = snapshot
        self._policies: dict[str, NamedPolicy] = {}
        for name, (version, text) in snapshot.policies.items():
            try:
                document = parse_document(text)
            except InvalidPolicyError as exc:
                log.error(
                    "stored policy %r v%d does not parse (%s): its identities are denied "
                    "everything until it is rewritten",
                    name,
                    version,
                    exc.message,
                    extra={"tether_code": "policy_unreadable"},
                )
                document = DENY_ALL
            self._policies[name] = NamedPolicy(name, version, document)
        self._attached: dict[tuple[TargetKind, str], list[str]] = {}
        for attachment in snapshot.attachments:
            self._attached.setdefault((attachment.kind, attachment.target), []).append(
                attachment.policy
            )

    def _names(self, kind: TargetKind, target: str) -> list[str]:
        return self._attached.get((kind, target), [])

    def subject(self, kind: str, name: str, issuer_fingerprint: str = "") -> Subject:
        """The subject of a ``device`` or ``service`` identity (see the module docstring).

        An enroll-only identity (``claim``: a claim certificate, or a birth certificate in its
        grace period) gets the built-in claim policy and nothing attached: connect and enroll
        only (its requests use the reserved ``$tether/`` topics, answered before topic policy),
        so no attachment can widen what a shared claim key can do.
        """
        if kind == "claim":
            return Subject(
                kind, name, (), (), (NamedPolicy(BUILTIN_CLAIM, 0, BUILTIN[BUILTIN_CLAIM]),)
            )
        groups: tuple[str, ...] = ()
        attributes: tuple[tuple[str, str], ...] = ()
        if kind == "service":
            names = list(self._names(TargetKind.SERVICE, name))
        else:
            groups = tuple(self.snapshot.groups.get(name, ()))
            attributes = tuple(self.snapshot.attributes.get(name, ()))
            names = list(self._names(TargetKind.DEVICE, name))
            for group in groups:
                names += self._names(TargetKind.GROUP, group)
        if issuer_fingerprint:
            names += self._names(TargetKind.CA, issuer_fingerprint)
        policies = tuple(self._policies[n] for n in dict.fromkeys(names) if n in self._policies)
        if not policies:
            builtin = builtin_for(kind)
            policies = (NamedPolicy(builtin, 0, BUILTIN[builtin]),)
        return Subject(kind, name, groups, attributes, policies)


def attribute_map(subject: Subject) -> Mapping[str, str]:
    """A subject's attributes as a mapping (for display)."""
    return dict(subject.attributes)
