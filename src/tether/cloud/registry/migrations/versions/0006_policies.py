"""Policies: versioned documents, their attachments, device groups and attributes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Nothing existing changes: with no policy attached every identity keeps the built-in default.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create policies, policy_versions, policy_attachments, device_groups, device_attributes."""
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policies"),
        sa.UniqueConstraint("name", name="uq_policies_name"),
    )
    op.create_table(
        "policy_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["policies.id"],
            name="fk_policy_versions_policy_id_policies",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_policy_versions"),
        sa.UniqueConstraint("policy_id", "version", name="uq_policy_versions_policy_version"),
    )
    op.create_table(
        "policy_attachments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=False),
        sa.Column("target_kind", sa.String(16), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "target_kind IN ('device', 'group', 'ca', 'service')",
            name="ck_policy_attachments_kind",
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["policies.id"],
            name="fk_policy_attachments_policy_id_policies",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_policy_attachments"),
        sa.UniqueConstraint(
            "policy_id", "target_kind", "target", name="uq_policy_attachments_policy_target"
        ),
    )
    op.create_index("ix_policy_attachments_target", "policy_attachments", ["target_kind", "target"])
    op.create_table(
        "device_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("group_name", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name="fk_device_groups_device_id_devices",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_device_groups"),
        sa.UniqueConstraint("device_id", "group_name", name="uq_device_groups_device_group"),
    )
    op.create_index("ix_device_groups_group_name", "device_groups", ["group_name"])
    op.create_table(
        "device_attributes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("value", sa.String(128), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name="fk_device_attributes_device_id_devices",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_device_attributes"),
        sa.UniqueConstraint("device_id", "name", name="uq_device_attributes_device_name"),
    )


def downgrade() -> None:
    """Drop the policy tables (every policy, attachment, group and attribute is lost)."""
    op.drop_table("device_attributes")
    op.drop_index("ix_device_groups_group_name", table_name="device_groups")
    op.drop_table("device_groups")
    op.drop_index("ix_policy_attachments_target", table_name="policy_attachments")
    op.drop_table("policy_attachments")
    op.drop_table("policy_versions")
    op.drop_table("policies")
