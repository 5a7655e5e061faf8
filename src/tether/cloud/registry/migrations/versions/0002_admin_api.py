"""Admin API: admin credentials (hashed), CA registration codes, published CRLs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the admins, registration_codes and published_crls tables."""
    op.create_table(
        "admins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_id", sa.String(32), nullable=False),
        sa.Column("salt", sa.LargeBinary(32), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_admins"),
        sa.UniqueConstraint("name", name="uq_admins_name"),
        sa.UniqueConstraint("token_id", name="uq_admins_token_id"),
    )
    op.create_table(
        "registration_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_registration_codes"),
        sa.UniqueConstraint("code", name="uq_registration_codes_code"),
    )
    op.create_table(
        "published_crls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("issuer", sa.String(64), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_published_crls"),
        sa.UniqueConstraint("issuer", name="uq_published_crls_issuer"),
    )


def downgrade() -> None:
    """Drop what this revision created."""
    op.drop_table("published_crls")
    op.drop_table("registration_codes")
    op.drop_table("admins")
