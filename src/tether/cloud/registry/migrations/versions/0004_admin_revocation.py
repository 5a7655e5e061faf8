"""Admin revocation: an administrator is active or revoked (and when), never deleted.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

A revoked row stays (the audit log names it, and its name must not be reused silently);
``status`` is checked by the token lookup, so a revoked token is refused at the next request
in every process. Existing administrators become ``active``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``admins.status`` (active/revoked, default active) and ``admins.revoked_at``."""
    with op.batch_alter_table("admins") as batch:
        batch.add_column(
            sa.Column("status", sa.String(16), nullable=False, server_default="active")
        )
        batch.add_column(sa.Column("revoked_at", sa.DateTime(), nullable=True))
        batch.create_check_constraint(op.f("ck_admins_status"), "status IN ('active', 'revoked')")


def downgrade() -> None:
    """Drop the revocation columns (revoked administrators become active again: beware)."""
    with op.batch_alter_table("admins") as batch:
        batch.drop_constraint(op.f("ck_admins_status"), type_="check")
        batch.drop_column("revoked_at")
        batch.drop_column("status")
