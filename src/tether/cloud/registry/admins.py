"""API administrators: token hashes (never tokens), rotation, final revocation.

The token itself is made and checked in ``cloud/admin.py``; the registry only stores its id,
salt and scrypt hash, and refuses to revoke the last active administrator.
"""

from __future__ import annotations

import re

from sqlalchemy import String, bindparam, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from tether.cloud.registry.audit import AuditAction, write_audit
from tether.cloud.registry.base import RegistryBase, check_actor, flush_or, load_one
from tether.cloud.registry.convert import admin_record
from tether.cloud.registry.errors import (
    AdminExistsError,
    AdminNotFoundError,
    AdminStateError,
    ConcurrentChangeError,
    InvalidRegistryInputError,
)
from tether.cloud.registry.models import AdminModel
from tether.cloud.registry.records import AdminRecord, AdminStatus

_ADMIN_NAME_RE = re.compile(r"[a-z][a-z0-9._-]{0,63}")
_FIND_ADMIN = select(
    AdminModel.name,
    AdminModel.token_id,
    AdminModel.salt,
    AdminModel.token_hash,
    AdminModel.created_at,
    AdminModel.status,
    AdminModel.revoked_at,
).where(
    AdminModel.token_id == bindparam("token_id", type_=String),
    AdminModel.status == bindparam("status", type_=String),
)


class Admins(RegistryBase):
    """The admin API's administrators."""

    def add_admin(
        self, name: str, *, token_id: str, salt: bytes, token_hash: bytes, actor: str
    ) -> AdminRecord:
        """Store an administrator's token hash (never the token). AdminExistsError on a dup."""
        actor = check_actor(actor)
        if not isinstance(name, str) or not _ADMIN_NAME_RE.fullmatch(name):
            raise InvalidRegistryInputError(
                f"Admin name {name!r} is not valid: 1 to 64 characters of a-z, 0-9 and . _ -, "
                "starting with a letter."
            )
        now = self._clock()

        def exists() -> AdminExistsError:
            return AdminExistsError(f"An admin named {name!r} already exists; pick another name.")

        with self._write() as session:
            if session.scalar(select(AdminModel.id).where(AdminModel.name == name)):
                raise exists()
            model = AdminModel(
                name=name,
                token_id=token_id,
                salt=salt,
                token_hash=token_hash,
                created_at=now,
                status=AdminStatus.ACTIVE.value,
                revoked_at=None,
            )
            session.add(model)
            flush_or(session, exists)
            write_audit(session, now, actor, AuditAction.ADMIN_ADD, name, {})
            return admin_record(model)

    def find_admin(self, token_id: str) -> AdminRecord | None:
        """The *active* administrator whose token carries ``token_id``, or None.

        A revoked administrator is not found, so its token is refused like an unknown one
        (without running the KDF) at the next request, in every process. One statement on a
        plain connection, not an ORM session: every API request asks it, and under a flood
        of random tokens its cost (CPU under the GIL the event loop needs) is the API's floor.
        """
        try:
            with self._single_statement_engine.connect() as connection:
                row = connection.execute(
                    _FIND_ADMIN, {"token_id": token_id, "status": AdminStatus.ACTIVE.value}
                ).first()
        except DBAPIError as exc:
            raise self._unavailable(exc) from exc
        return None if row is None else admin_record(row)

    def get_admin(self, name: str) -> AdminRecord:
        """The administrator called ``name``, active or revoked; AdminNotFoundError if none."""
        with self._read() as session:
            return admin_record(_load_admin(session, name))

    def list_admins(self) -> list[AdminRecord]:
        """Every administrator (active and revoked), oldest first."""
        with self._read() as session:
            return [admin_record(m) for m in session.scalars(select(AdminModel).order_by("id"))]

    def rotate_admin(
        self, name: str, *, token_id: str, salt: bytes, token_hash: bytes, actor: str
    ) -> AdminRecord:
        """Give an active administrator a new token (id, salt, hash); the old one dies at once.

        The old token id no longer finds the row, so every process refuses the old token at
        its next request. AdminNotFoundError, or AdminStateError for a revoked admin; audited.
        """
        actor = check_actor(actor)
        now = self._clock()
        with self._write() as session:
            model = _load_admin(session, name)
            if model.status != AdminStatus.ACTIVE.value:
                raise AdminStateError(
                    f"The admin {name!r} is revoked; revocation is final. Add a new admin "
                    "instead (`tether cloud admin add`)."
                )
            model.token_id = token_id
            model.salt = salt
            model.token_hash = token_hash
            flush_or(session, lambda: ConcurrentChangeError("That token id is taken; retry."))
            write_audit(session, now, actor, AuditAction.ADMIN_ROTATE, model.name, {})
            return admin_record(model)

    def revoke_admin(self, name: str, *, actor: str) -> AdminRecord:
        """Revoke an administrator for good: its token is refused from the next request.

        The last active administrator cannot be revoked (AdminStateError): the API would be
        left without anyone to run it. Rotate its token instead, or add another admin first.
        AdminNotFoundError for an unknown name; a revoked admin stays revoked. Audited.
        """
        actor = check_actor(actor)
        now = self._clock()
        with self._write() as session:
            model = _load_admin(session, name)
            if model.status != AdminStatus.ACTIVE.value:
                raise AdminStateError(f"The admin {name!r} is already revoked.")
            # FOR UPDATE (PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers):
            # two concurrent revocations cannot both see another active admin and leave none.
            active = session.scalars(
                select(AdminModel.id)
                .where(AdminModel.status == AdminStatus.ACTIVE.value)
                .with_for_update()
            ).all()
            if len(active) <= 1:
                raise AdminStateError(
                    f"The admin {name!r} is the last active admin; revoking it would leave the "
                    "API without an administrator. Rotate its token instead (`tether cloud "
                    "admin rotate`), or add another admin first."
                )
            model.status = AdminStatus.REVOKED.value
            model.revoked_at = now
            session.flush()
            write_audit(session, now, actor, AuditAction.ADMIN_REVOKE, model.name, {})
            return admin_record(model)


def _load_admin(session: Session, name: str) -> AdminModel:
    return load_one(
        session,
        AdminModel,
        AdminModel.name == name,
        lambda: AdminNotFoundError(
            f"No admin named {name!r}; `tether cloud admin list` shows the admins."
        ),
    )
