"""The policy half of the admin service: every policy, group and attribute change, and the
read-only questions operators ask (effective policy, "may S publish T?").

:class:`PolicyAdmin` is mixed into :class:`~tether.cloud.operations.AdminOperations` (which
the API, the console and the CLI all write through); it needs only ``self.registry``. Every
document is validated here (:func:`~tether.cloud.policy.document.parse_document`, which names
the offending statement) before the registry sees it, and the names ``builtin:*`` are
reserved: the built-in defaults are not stored and cannot be replaced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tether.cloud.gateway.identity import Identity, IdentityKind
from tether.cloud.gateway.policy import DocumentPolicy
from tether.cloud.policy.builtin import BUILTIN_PREFIX
from tether.cloud.policy.document import Action, parse_document
from tether.cloud.policy.evaluate import Decision, Evaluator, Subject
from tether.cloud.policy.resolve import Resolver
from tether.cloud.registry import DeviceNotFoundError
from tether.cloud.registry.labels import check_labels
from tether.cloud.registry.policies import AttachmentRecord, PolicyRecord, TargetKind
from tether.errors import InvalidInputError

if TYPE_CHECKING:
    from tether.cloud.registry import Registry


class ReservedPolicyNameError(InvalidInputError):
    """``builtin:*`` names the built-in defaults (not stored or replaced); ``schema`` and
    ``test`` are API routes."""

    code = "policy_name_reserved"


@dataclass(frozen=True)
class EffectivePolicy:
    """What applies to one identity: its groups, attributes, policies and compiled rules."""

    subject: Subject
    rules: list[
        tuple[str, int, str, str, Action, str]
    ]  # policy, version, sid, effect, action, pattern


# Path segments of the API's own policy routes (``/policies/schema``, ``/policies/test``).
RESERVED_NAMES = frozenset({"schema", "test"})


def _check_not_builtin(name: str) -> None:
    if name.startswith(BUILTIN_PREFIX):
        raise ReservedPolicyNameError(
            f"{name!r} is a built-in policy; write your own under another name."
        )
    if name in RESERVED_NAMES:
        raise ReservedPolicyNameError(f"{name!r} is reserved (an API route); pick another name.")


def subject_for(registry: Registry, kind: str, name: str) -> Subject:
    """The subject of a device or service as the gateway would resolve it now.

    The CA is the one the registry binds the name to (the only CA whose certificates the
    gateway accepts for it); a service not in the registry gets its own attachments only.
    """
    try:
        issuer = registry.get_device(name).ca_fingerprint or ""
    except DeviceNotFoundError:
        if kind == "device":
            raise
        issuer = ""
    return Resolver(registry.policy_snapshot(serial=name)).subject(kind, name, issuer)


class PolicyAdmin:
    """Policy writes and questions; mixed into the admin service (needs ``self.registry``)."""

    registry: Registry

    def put_policy(
        self, name: str, document: str | bytes | Mapping[str, Any], *, actor: str
    ) -> PolicyRecord:
        """Validate ``document`` and store it as the policy's next version."""
        _check_not_builtin(name)
        parsed = parse_document(document)
        return self.registry.put_policy(name, parsed.canonical(), actor=actor)

    def delete_policy(self, name: str, *, actor: str) -> None:
        """Delete a policy that is attached nowhere."""
        self.registry.delete_policy(name, actor=actor)

    def attach_policy(
        self, name: str, kind: TargetKind, target: str, *, actor: str
    ) -> AttachmentRecord:
        """Attach a policy to a device, group, CA or service (applies to live sessions)."""
        return self.registry.attach_policy(name, kind, target, actor=actor)

    def detach_policy(self, name: str, kind: TargetKind, target: str, *, actor: str) -> None:
        """Detach a policy (applies to live sessions)."""
        self.registry.detach_policy(name, kind, target, actor=actor)

    def add_device_group(self, serial: str, group: str, *, actor: str) -> tuple[str, ...]:
        """Put a device in a group."""
        return self.registry.add_device_group(serial, group, actor=actor)

    def remove_device_group(self, serial: str, group: str, *, actor: str) -> tuple[str, ...]:
        """Take a device out of a group."""
        return self.registry.remove_device_group(serial, group, actor=actor)

    def set_device_attribute(
        self, serial: str, name: str, value: str | None, *, actor: str
    ) -> dict[str, str]:
        """Set or (``None``) remove a device attribute."""
        return self.registry.set_device_attribute(serial, name, value, actor=actor)

    def check_labels(self, groups: Sequence[str], attributes: Mapping[str, str]) -> None:
        """Refuse bad groups or attributes before a device is made (the provisioning path)."""
        check_labels(groups, attributes)

    def label_device(
        self, serial: str, *, groups: Sequence[str], attributes: Mapping[str, str], actor: str
    ) -> None:
        """Give a new device its groups and attributes (one transaction, each change audited)."""
        if groups or attributes:
            self.registry.label_device(serial, groups=groups, attributes=attributes, actor=actor)

    # -- questions (read-only) -------------------------------------------------------------

    def effective_policy(self, kind: str, name: str) -> EffectivePolicy:
        """What applies to a device or service now."""
        subject = subject_for(self.registry, kind, name)
        return EffectivePolicy(subject, Evaluator(subject).statements())

    def test_policy(self, kind: str, name: str, action: Action, resource: str) -> Decision:
        """The decision the gateway would make now, with the statement that made it."""
        # The gateway's own gates (name grammar, connect right first), not a copy of them.
        subject = subject_for(self.registry, kind, name)
        identity = Identity(IdentityKind(kind), name, "", "")
        return DocumentPolicy(lambda _identity: subject).decide(identity, Action(action), resource)
