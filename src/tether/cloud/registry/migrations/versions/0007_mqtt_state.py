"""MQTT state that outlives a connection: retained messages, persistent sessions, queues.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Issue 17: kept in the registry's database so it survives a gateway restart and every worker
and host shares it (``cloud/gateway/stores.py`` says why). No audit rows: message state is
not an administrative action.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``mqtt_retained``, ``mqtt_sessions`` and ``mqtt_queued``."""
    op.create_table(
        "mqtt_retained",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("topic_hash", sa.String(64), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("qos", sa.Integer(), nullable=False),
        sa.Column("sender_kind", sa.String(16), nullable=False),
        sa.Column("sender_name", sa.String(64), nullable=False),
        sa.Column("user_properties", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("stored_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mqtt_retained"),
        sa.UniqueConstraint("topic_hash", name="uq_mqtt_retained_topic_hash"),
    )
    op.create_index("ix_mqtt_retained_sender_name", "mqtt_retained", ["sender_name"])
    op.create_table(
        "mqtt_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("subscriptions", sa.Text(), nullable=False),
        sa.Column("qos2_received", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_mqtt_sessions"),
        sa.UniqueConstraint("kind", "name", name="uq_mqtt_sessions_kind"),
    )
    op.create_table(
        "mqtt_queued",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("qos", sa.Integer(), nullable=False),
        sa.Column("sender_kind", sa.String(16), nullable=False),
        sa.Column("sender_name", sa.String(64), nullable=False),
        sa.Column("user_properties", sa.Text(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("queued_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["mqtt_sessions.id"],
            name="fk_mqtt_queued_session_id_mqtt_sessions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_mqtt_queued"),
    )
    op.create_index("ix_mqtt_queued_session_id", "mqtt_queued", ["session_id"])


def downgrade() -> None:
    """Drop the MQTT state (every retained message and persistent session is lost)."""
    op.drop_index("ix_mqtt_queued_session_id", table_name="mqtt_queued")
    op.drop_table("mqtt_queued")
    op.drop_table("mqtt_sessions")
    op.drop_index("ix_mqtt_retained_sender_name", table_name="mqtt_retained")
    op.drop_table("mqtt_retained")
