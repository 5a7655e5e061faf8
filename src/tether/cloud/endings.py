"""Which live sessions a registry change ends: the feed's rule, in one place.

``CloudService.dispatch`` drops the sessions an ``Ending`` matches, and its handshake re-check
refuses a verdict read before an ending it has already applied. Which *verdicts* a change may
alter is a wider question (a CA registration ends no session but may change a verdict):
:mod:`tether.cloud.verdict_view` answers that one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tether.cloud.gateway import Identity
from tether.cloud.registry import (
    AuditAction,
    AuditEntry,
    CAStatus,
    CertState,
    DeviceStatus,
    VerdictCode,
)


@dataclass(frozen=True)
class Ending:
    """A registry change that ends sessions: its audit id, refusal code and which identities."""

    audit_id: int
    code: str
    matches: Callable[[Identity], bool]


def ended_sessions(entry: AuditEntry) -> Ending | None:
    """Which live sessions an audit entry ends, or None if it ends none."""
    details = entry.details
    target = entry.target
    if entry.action == AuditAction.CERTIFICATE_REVOKE:
        return Ending(
            entry.id,
            VerdictCode.CERTIFICATE_REVOKED.value,
            lambda identity: identity.certificate_fingerprint == target,
        )
    if entry.action == AuditAction.CERTIFICATE_STATE and details.get("to") != CertState.ACTIVE:
        return Ending(
            entry.id,
            VerdictCode.CERTIFICATE_INACTIVE.value,
            lambda identity: identity.certificate_fingerprint == target,
        )
    if entry.action == AuditAction.DEVICE_STATUS and details.get("to") == DeviceStatus.DISABLED:
        return Ending(
            entry.id, VerdictCode.DEVICE_DISABLED.value, lambda identity: identity.name == target
        )
    if entry.action == AuditAction.CA_STATUS and details.get("to") != CAStatus.ACTIVE:
        # By the CA's fingerprint, never its name: another CA may carry the same subject.
        return Ending(
            entry.id,
            VerdictCode.CA_INACTIVE.value,
            lambda identity: identity.issuer_fingerprint == target,
        )
    if entry.action == AuditAction.DEVICE_REBIND:
        # The serial now belongs to another CA: certificates from the old one stop here.
        moved_to = details.get("to")
        return Ending(
            entry.id,
            VerdictCode.SERIAL_BOUND_TO_OTHER_CA.value,
            lambda identity: identity.name == target and identity.issuer_fingerprint != moved_to,
        )
    return None
