"""Enrollment: claims, one-time enrollment tokens, idempotent enrollments, certificate succession.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

- ``claims``: a claim certificate (a row of ``certificates`` without a device) and its policy:
  which serials (a JSON list, NULL for any) or how many (``max_enrollments``), until when.
- ``enrollment_tokens``: one-time tokens, stored as the SHA-256 of the token (it is 32 random
  bytes, so no KDF is needed); ``used_at`` set once, by the enrollment that spent it.
- ``enrollments``: one row per distinct enroll request (``request_digest``, unique), pointing at
  the certificate it issued, so a retry returns the same result and issues nothing.
- ``certificate_successions``: which certificate replaced which (enroll, renew, rotate), and
  when the predecessor is retired (end of the overlap).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the four enrollment tables."""
    op.create_table(
        "claims",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column(
            "certificate_id",
            sa.Integer(),
            sa.ForeignKey("certificates.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("serials", sa.Text(), nullable=True),
        sa.Column("max_enrollments", sa.Integer(), nullable=True),
        sa.Column("enrollments", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_claims")),
        sa.UniqueConstraint("name", name=op.f("uq_claims_name")),
        sa.UniqueConstraint("certificate_id", name=op.f("uq_claims_certificate_id")),
    )
    op.create_table(
        "enrollment_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("serial", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollment_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_enrollment_tokens_token_hash")),
    )
    op.create_table(
        "enrollments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("request_digest", sa.String(64), nullable=False),
        sa.Column("serial", sa.String(128), nullable=False),
        sa.Column("credential", sa.String(200), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column(
            "certificate_id",
            sa.Integer(),
            sa.ForeignKey("certificates.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrollments")),
        sa.UniqueConstraint("request_digest", name=op.f("uq_enrollments_request_digest")),
    )
    op.create_index(op.f("ix_enrollments_serial"), "enrollments", ["serial"])
    op.create_table(
        "certificate_successions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "predecessor_id",
            sa.Integer(),
            sa.ForeignKey("certificates.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column(
            "successor_id",
            sa.Integer(),
            sa.ForeignKey("certificates.id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("retire_at", sa.DateTime(), nullable=False),
        sa.Column("retired_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certificate_successions")),
        sa.UniqueConstraint("successor_id", name=op.f("uq_certificate_successions_successor_id")),
    )
    op.create_index(
        op.f("ix_certificate_successions_retire_at"), "certificate_successions", ["retire_at"]
    )


def downgrade() -> None:
    """Drop the enrollment tables."""
    op.drop_index(op.f("ix_certificate_successions_retire_at"), "certificate_successions")
    op.drop_table("certificate_successions")
    op.drop_index(op.f("ix_enrollments_serial"), "enrollments")
    op.drop_table("enrollments")
    op.drop_table("enrollment_tokens")
    op.drop_table("claims")
