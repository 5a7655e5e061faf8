"""The append-only audit log: the action names, the one way a row is written, the feed.

Every registry change writes its audit row in its own transaction (``write_audit``), so a
change without its row cannot commit. The row's ``action`` is an :class:`AuditAction`; the
values are what the database has always stored, and the gateway's change feed
(``cloud/service.py``) matches on the same members. Actions taken outside the registry (a
refused connection, a failed login) go through :meth:`AuditLog.audit` with any lowercase
dotted name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from tether.cloud.registry.base import RegistryBase, check_actor, check_page, page_of
from tether.cloud.registry.convert import audit_entry
from tether.cloud.registry.errors import InvalidRegistryInputError
from tether.cloud.registry.models import AuditModel
from tether.cloud.registry.records import AuditEntry, DetailValue, Page

_ACTION_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")


class AuditAction(StrEnum):
    """What a registry change was; the stored ``action`` string (stable: feeds match on it)."""

    CA_REGISTER = "ca.register"
    CA_STATUS = "ca.status"
    CA_AUTO_REGISTRATION = "ca.auto_registration"
    CA_REGISTRATION_CODE = "ca.registration_code"
    DEVICE_ADD = "device.add"
    DEVICE_STATUS = "device.status"
    DEVICE_REBIND = "device.rebind"
    DEVICE_REGISTER_JIT = "device.register_jit"
    CERTIFICATE_ADD = "certificate.add"
    CERTIFICATE_STATE = "certificate.state"
    CERTIFICATE_REVOKE = "certificate.revoke"
    ADMIN_ADD = "admin.add"
    ADMIN_ROTATE = "admin.rotate"
    ADMIN_REVOKE = "admin.revoke"
    CRL_PUBLISH = "crl.publish"
    POLICY_PUT = "policy.put"
    POLICY_DELETE = "policy.delete"
    POLICY_ATTACH = "policy.attach"
    POLICY_DETACH = "policy.detach"
    DEVICE_GROUP_ADD = "device.group_add"
    DEVICE_GROUP_REMOVE = "device.group_remove"
    DEVICE_ATTRIBUTE = "device.attribute"


def _check_details(details: Mapping[str, DetailValue]) -> str:
    for key, value in details.items():
        if not isinstance(key, str) or not (value is None or isinstance(value, str | int | bool)):
            raise InvalidRegistryInputError(
                f"Audit detail {key!r} must map a string to a str, int, bool or None."
            )
    return json.dumps(dict(details), sort_keys=True, separators=(",", ":"))


def write_audit(
    session: Session,
    now: datetime,
    actor: str,
    action: str,
    target: str,
    details: Mapping[str, DetailValue],
) -> AuditModel:
    """Append one audit row inside the caller's transaction (committed with its change).

    On PostgreSQL the same transaction notifies ``tether_audit`` with the row's id, so every
    gateway worker listening (:mod:`tether.cloud.changes`) wakes exactly when the row is
    committed, and never for a change that rolled back.
    """
    row = AuditModel(
        at=now, actor=actor, action=str(action), target=target, details=_check_details(details)
    )
    session.add(row)
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify('tether_audit', :id)"), {"id": str(row.id)})
    return row


def change_status(
    session: Session,
    model: Any,
    attribute: str,
    new: str,
    *,
    now: datetime,
    actor: str,
    action: str,
    target: str,
) -> None:
    """Set a status column and audit ``from``/``to``; the current value changes nothing.

    One rule for every status change (CA, device, certificate): no audit row without a
    change, ``updated_at`` moves with it.
    """
    old = getattr(model, attribute)
    if old == new:
        return
    setattr(model, attribute, str(new))
    model.updated_at = now
    write_audit(session, now, actor, action, target, {"from": old, "to": str(new)})


class AuditLog(RegistryBase):
    """Reading the log, and appending actions taken outside the registry."""

    def audit(
        self,
        *,
        actor: str,
        action: str,
        target: str,
        details: Mapping[str, DetailValue] | None = None,
    ) -> AuditEntry:
        """Append one audit row for an action taken outside the registry (e.g. a login).

        ``action`` is a lowercase dotted name like ``api.login_failed``; ``details`` values
        are str, int, bool or None.
        """
        actor = check_actor(actor)
        if not _ACTION_RE.fullmatch(action):
            raise InvalidRegistryInputError(
                f"Audit action {action!r} must be a lowercase dotted name (a-z, 0-9, . _ -)."
            )
        if not target or len(target) > 200:
            raise InvalidRegistryInputError("An audit target must be 1 to 200 characters.")
        now = self._clock()
        with self._write() as session:
            return audit_entry(write_audit(session, now, actor, action, target, details or {}))

    def list_audit(
        self, *, offset: int = 0, limit: int = 50, target: str | None = None
    ) -> Page[AuditEntry]:
        """Audit entries, newest first, optionally only those about ``target``."""
        check_page(offset, limit)
        stmt = select(AuditModel)
        if target is not None:
            stmt = stmt.where(AuditModel.target == target)
        with self._read() as session:
            return page_of(session, stmt, AuditModel.id.desc(), audit_entry, offset, limit)

    def audit_after(self, after_id: int, *, limit: int = 500) -> list[AuditEntry]:
        """Audit entries with ``id > after_id``, oldest first: a feed to follow changes.

        The gateway tails this to drop live sessions when a certificate is revoked, a device
        disabled or a CA deactivated, whichever process made the change.
        """
        check_page(0, limit)
        stmt = select(AuditModel).where(AuditModel.id > after_id).order_by(AuditModel.id)
        with self._read() as session:
            return [audit_entry(m) for m in session.scalars(stmt.limit(limit))]

    def last_audit_id(self) -> int:
        """The id of the newest audit entry (0 for an empty log): where a feed starts."""
        with self._read() as session:
            return session.scalar(select(func.max(AuditModel.id))) or 0
