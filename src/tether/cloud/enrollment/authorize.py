"""Enrollment asks the policy engine: action ``enroll``, resource = the serial asked.

Every enroll and renew that arrives with a TLS identity (a factory or claim certificate, an
enroll-only birth certificate in its grace period, or the current operational certificate)
is decided by the cloud's policy (:class:`~tether.cloud.gateway.policy.DocumentPolicy`, the
gateway's ``LivePolicy`` in ``tether cloud serve``) for that identity, once the serial is
final (after the hook) and before anything is signed. A refusal is
``enrollment_policy_denied`` naming the policy and statement, is audited
(``enrollment.refused``) and issues nothing. A one-time token carries no identity to decide
for: the token is itself the operator's grant for its one serial.

The built-in policies keep what enrollment did before policies existed: ``builtin:claim``
allows ``enroll`` of any serial (``+``; the claim's own record says which serials and how
many), ``builtin:device`` allows ``enroll`` of the device's own serial (a factory device
enrolls as itself, an operational certificate renews itself). An operator policy attached to
a device, its group or its CA that does not grant ``enroll`` stops its renewals: that is the
point of attaching it.

Threads: enrollment runs on its own threads while the gateway's event loop uses the same
policy object. ``DocumentPolicy`` only gets, sets and clears entries of its evaluator cache
(single dictionary operations, atomic in CPython) and the resolver is replaced, never mutated,
on a reload, so a decision made here sees either the old or the new snapshot, never a mix.
"""

from __future__ import annotations

from typing import Protocol

from tether.cloud.gateway.identity import Identity
from tether.cloud.policy.document import Action
from tether.cloud.policy.evaluate import Decision
from tether.errors import PermissionDeniedError

REFUSED_ACTION = "enrollment.refused"


class EnrollmentPolicyDeniedError(PermissionDeniedError):
    """The policy does not allow this identity to enroll (or renew) this serial."""

    code = "enrollment_policy_denied"


class EnrollDecider(Protocol):
    """What the enroll operation needs of a policy (``DocumentPolicy.decide``)."""

    def decide(self, identity: Identity, action: Action, resource: str) -> Decision:
        """The decision on ``action`` for ``resource``, with the policy behind it."""
        ...


def refusal(policy: EnrollDecider | None, identity: Identity, serial: str) -> Decision | None:
    """The refusing decision if ``policy`` does not allow ``identity`` to enroll ``serial``."""
    if policy is None:
        return None
    decision = policy.decide(identity, Action.ENROLL, serial)
    return None if decision.allowed else decision
