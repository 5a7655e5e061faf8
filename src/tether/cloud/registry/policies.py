"""Policies and their attachments: the policy aggregate (device labels: ``labels``).

A policy is a name with numbered versions; each ``put_policy`` with a different document adds
the next version (the same document again changes nothing and writes no audit row), and the
newest is the one that applies. A policy is attached to targets: a device (serial), a device
group (name; a group exists by being named, so a policy can wait for its first member), a CA
(fingerprint: a default for everything that CA issued) or a service (name). A policy that is
attached cannot be deleted.

Every change is one transaction with its audit row (``policy.*``), which the gateway's change
feed follows to re-evaluate live sessions. :meth:`Policies.policy_snapshot` is the one read
the gateway needs (with the device labels of :mod:`tether.cloud.registry.labels`). The
records of this aggregate live here rather than in ``records.py``: nothing else hands them
out.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tether.cloud.registry.audit import AuditAction, write_audit
from tether.cloud.registry.base import (
    RegistryBase,
    check_actor,
    check_fingerprint,
    check_serial,
    flush_or,
    load_one,
)
from tether.cloud.registry.cas import load_ca
from tether.cloud.registry.devices import load_device
from tether.cloud.registry.errors import ConcurrentChangeError, InvalidRegistryInputError
from tether.cloud.registry.models import (
    DeviceAttributeModel,
    DeviceGroupModel,
    DeviceModel,
    PolicyAttachmentModel,
    PolicyModel,
    PolicyVersionModel,
)
from tether.errors import ConflictError, NotFoundError

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class PolicyNotFoundError(NotFoundError):
    """No policy (or no such version of it) is stored under this name."""

    code = "policy_not_found"


class PolicyInUseError(ConflictError):
    """The policy is still attached somewhere; detach it first."""

    code = "policy_in_use"


class AttachmentNotFoundError(NotFoundError):
    """The policy is not attached to this target."""

    code = "policy_attachment_not_found"


class TargetKind(StrEnum):
    """What a policy can be attached to."""

    DEVICE = "device"
    GROUP = "group"
    CA = "ca"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class PolicyRecord:
    """One version of a policy (the current one unless asked otherwise)."""

    name: str
    version: int
    current_version: int
    document: str  # canonical JSON
    sha256: str
    created_at: datetime
    created_by: str


@dataclass(frozen=True, slots=True)
class AttachmentRecord:
    """A policy attached to a target."""

    policy: str
    kind: TargetKind
    target: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """What the gateway needs to resolve policies: every current policy and attachment, and
    the groups and attributes of the devices that have any (of one device when asked)."""

    policies: Mapping[str, tuple[int, str]]  # name -> (version, canonical JSON)
    attachments: tuple[AttachmentRecord, ...]
    groups: Mapping[str, tuple[str, ...]]  # serial -> groups (sorted)
    attributes: Mapping[str, tuple[tuple[str, str], ...]]  # serial -> (name, value) sorted


def check_name(name: str, what: str = "Policy") -> str:
    """A policy or group name: 1 to 64 of A-Z a-z 0-9 . _ -, starting alphanumeric."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidRegistryInputError(
            f"{what} name {name!r} is not valid: 1 to 64 characters of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit."
        )
    return name


def _digest(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def _load_policy(session: Session, name: str) -> PolicyModel:
    return load_one(
        session,
        PolicyModel,
        PolicyModel.name == name,
        lambda: PolicyNotFoundError(f"No policy named {name!r}; create it first."),
    )


def _version(session: Session, policy: PolicyModel, version: int) -> PolicyVersionModel:
    return load_one(
        session,
        PolicyVersionModel,
        (PolicyVersionModel.policy_id == policy.id) & (PolicyVersionModel.version == version),
        lambda: PolicyNotFoundError(f"Policy {policy.name!r} has no version {version}."),
    )


def _record(policy: PolicyModel, row: PolicyVersionModel) -> PolicyRecord:
    return PolicyRecord(
        name=policy.name,
        version=row.version,
        current_version=policy.current_version,
        document=row.document,
        sha256=_digest(row.document),
        created_at=row.created_at,
        created_by=row.created_by,
    )


def _attachment(m: PolicyAttachmentModel) -> AttachmentRecord:
    return AttachmentRecord(m.policy.name, TargetKind(m.target_kind), m.target, m.created_at)


class Policies(RegistryBase):
    """Policy documents and versions, attachments, and device groups and attributes."""

    # -- documents -------------------------------------------------------------------------

    def put_policy(self, name: str, document: str, *, actor: str) -> PolicyRecord:
        """Store ``document`` (canonical JSON, already validated) as the next version.

        The same document as the current version changes nothing and writes no audit row.
        """
        actor = check_actor(actor)
        name = check_name(name)
        now = self._clock()
        with self._write() as session:
            policy = session.scalars(select(PolicyModel).where(PolicyModel.name == name)).first()
            if policy is not None:
                current = _version(session, policy, policy.current_version)
                if current.document == document:
                    return _record(policy, current)
                policy.current_version += 1
                policy.updated_at = now
            else:
                policy = PolicyModel(name=name, current_version=1, created_at=now, updated_at=now)
                session.add(policy)
                flush_or(session, _conflict)
            row = PolicyVersionModel(
                policy_id=policy.id,
                version=policy.current_version,
                document=document,
                created_at=now,
                created_by=actor,
            )
            session.add(row)
            flush_or(session, _conflict)
            write_audit(
                session, now, actor, AuditAction.POLICY_PUT, name,
                {"version": row.version, "sha256": _digest(document)},
            )  # fmt: skip
            return _record(policy, row)

    def get_policy(self, name: str, *, version: int | None = None) -> PolicyRecord:
        """The current (or the given) version of a policy. Raises PolicyNotFoundError."""
        name = check_name(name)
        with self._read() as session:
            policy = _load_policy(session, name)
            return _record(policy, _version(session, policy, version or policy.current_version))

    def list_policies(self) -> list[PolicyRecord]:
        """Every policy at its current version, by name."""
        stmt = (
            select(PolicyModel, PolicyVersionModel)
            .join(PolicyVersionModel, PolicyVersionModel.policy_id == PolicyModel.id)
            .where(PolicyVersionModel.version == PolicyModel.current_version)
            .order_by(PolicyModel.name)
        )
        with self._read() as session:
            return [_record(p, v) for p, v in session.execute(stmt)]

    def delete_policy(self, name: str, *, actor: str) -> None:
        """Delete a policy and its versions (the audit log keeps their digests).

        Raises PolicyInUseError while it is attached anywhere.
        """
        actor = check_actor(actor)
        name = check_name(name)
        now = self._clock()
        with self._write() as session:
            policy = _load_policy(session, name)
            used = session.scalars(
                select(PolicyAttachmentModel).where(PolicyAttachmentModel.policy_id == policy.id)
            ).first()
            if used is not None:
                raise PolicyInUseError(
                    f"Policy {name!r} is attached to {used.target_kind} {used.target!r}; "
                    "detach it everywhere first."
                )
            version = policy.current_version
            session.execute(
                delete(PolicyVersionModel).where(PolicyVersionModel.policy_id == policy.id)
            )
            session.delete(policy)
            write_audit(session, now, actor, AuditAction.POLICY_DELETE, name, {"version": version})

    # -- attachments -----------------------------------------------------------------------

    def _check_target(self, session: Session, kind: TargetKind, target: str) -> str:
        if kind is TargetKind.DEVICE:
            return load_device(session, check_serial(target)).serial
        if kind is TargetKind.CA:
            return load_ca(session, check_fingerprint(target)).fingerprint
        if kind is TargetKind.GROUP:
            return check_name(target, "Group")
        return check_serial(target)  # a service name is in the serial grammar too

    def attach_policy(
        self, name: str, kind: TargetKind, target: str, *, actor: str
    ) -> AttachmentRecord:
        """Attach a policy to a target; attaching it again changes nothing."""
        actor = check_actor(actor)
        name = check_name(name)
        kind = _kind(kind)
        now = self._clock()
        with self._write() as session:
            policy = _load_policy(session, name)
            target = self._check_target(session, kind, target)
            existing = session.scalars(
                select(PolicyAttachmentModel).where(
                    (PolicyAttachmentModel.policy_id == policy.id)
                    & (PolicyAttachmentModel.target_kind == kind.value)
                    & (PolicyAttachmentModel.target == target)
                )
            ).first()
            if existing is not None:
                return _attachment(existing)
            row = PolicyAttachmentModel(
                policy_id=policy.id, target_kind=kind.value, target=target, created_at=now
            )
            row.policy = policy
            session.add(row)
            flush_or(session, _conflict)
            write_audit(
                session, now, actor, AuditAction.POLICY_ATTACH, name,
                {"kind": kind.value, "target": target},
            )  # fmt: skip
            return _attachment(row)

    def detach_policy(self, name: str, kind: TargetKind, target: str, *, actor: str) -> None:
        """Detach a policy from a target. Raises AttachmentNotFoundError if it is not there."""
        actor = check_actor(actor)
        name = check_name(name)
        kind = _kind(kind)
        now = self._clock()
        with self._write() as session:
            policy = _load_policy(session, name)
            target = target.replace(":", "").lower() if kind is TargetKind.CA else target
            row = session.scalars(
                select(PolicyAttachmentModel).where(
                    (PolicyAttachmentModel.policy_id == policy.id)
                    & (PolicyAttachmentModel.target_kind == kind.value)
                    & (PolicyAttachmentModel.target == target)
                )
            ).first()
            if row is None:
                raise AttachmentNotFoundError(
                    f"Policy {name!r} is not attached to {kind.value} {target!r}."
                )
            session.delete(row)
            write_audit(
                session, now, actor, AuditAction.POLICY_DETACH, name,
                {"kind": kind.value, "target": target},
            )  # fmt: skip

    def list_attachments(
        self,
        *,
        policy: str | None = None,
        kind: TargetKind | None = None,
        target: str | None = None,
    ) -> list[AttachmentRecord]:
        """Attachments, optionally of one policy and/or to one target."""
        stmt = select(PolicyAttachmentModel).join(PolicyAttachmentModel.policy)
        if policy is not None:
            stmt = stmt.where(PolicyModel.name == check_name(policy))
        if kind is not None:
            stmt = stmt.where(PolicyAttachmentModel.target_kind == _kind(kind).value)
        if target is not None:
            stmt = stmt.where(PolicyAttachmentModel.target == target)
        stmt = stmt.order_by(PolicyModel.name, PolicyAttachmentModel.target_kind)
        with self._read() as session:
            return [_attachment(m) for m in session.scalars(stmt).unique()]

    # -- the gateway's read ----------------------------------------------------------------

    def policy_snapshot(self, *, serial: str | None = None) -> PolicySnapshot:
        """Every current policy and attachment, with the groups and attributes of every
        device that has any (or, with ``serial``, of that device only), in one snapshot."""
        with self._read() as session:
            policies = {
                p.name: (v.version, v.document)
                for p, v in session.execute(
                    select(PolicyModel, PolicyVersionModel)
                    .join(PolicyVersionModel, PolicyVersionModel.policy_id == PolicyModel.id)
                    .where(PolicyVersionModel.version == PolicyModel.current_version)
                )
            }
            attachments = tuple(
                _attachment(m) for m in session.scalars(select(PolicyAttachmentModel)).unique()
            )
            group_stmt = select(DeviceModel.serial, DeviceGroupModel.group_name).join(
                DeviceGroupModel.device
            )
            attr_stmt = select(
                DeviceModel.serial, DeviceAttributeModel.name, DeviceAttributeModel.value
            ).join(DeviceAttributeModel.device)
            if serial is not None:
                group_stmt = group_stmt.where(DeviceModel.serial == serial)
                attr_stmt = attr_stmt.where(DeviceModel.serial == serial)
            groups: dict[str, list[str]] = {}
            for device_serial, group in session.execute(group_stmt):
                groups.setdefault(device_serial, []).append(group)
            attributes: dict[str, list[tuple[str, str]]] = {}
            for device_serial, name, value in session.execute(attr_stmt):
                attributes.setdefault(device_serial, []).append((name, value))
        return PolicySnapshot(
            policies=policies,
            attachments=attachments,
            groups={s: tuple(sorted(g)) for s, g in groups.items()},
            attributes={s: tuple(sorted(a)) for s, a in attributes.items()},
        )


def _kind(kind: TargetKind | str) -> TargetKind:
    try:
        return TargetKind(kind)
    except ValueError:
        raise InvalidRegistryInputError(
            f"A policy attaches to one of {', '.join(k.value for k in TargetKind)}, not {kind!r}."
        ) from None


def _conflict() -> Exception:
    return ConcurrentChangeError(
        "A concurrent change to the policies conflicted with this one; nothing was changed, retry."
    )
