"""Message Expiry Interval of retained and queued MQTT messages.

Revision ID: 0010
Revises: 0007
Create Date: 2026-12-01

Issue 17 (follow-up): MQTT 5 3.3.2.3.3 asks a server to drop a message whose Message Expiry
Interval has passed before delivery and to send the rest with the interval decremented. The
store keeps the interval the publisher gave (NULL: none); with ``stored_at`` / ``queued_at``
that is the deadline, read on the store's own clock.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``expiry_interval`` to ``mqtt_retained`` and ``mqtt_queued``."""
    with op.batch_alter_table("mqtt_retained") as table:
        table.add_column(sa.Column("expiry_interval", sa.Integer(), nullable=True))
    with op.batch_alter_table("mqtt_queued") as table:
        table.add_column(sa.Column("expiry_interval", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Drop the two columns again."""
    with op.batch_alter_table("mqtt_queued") as table:
        table.drop_column("expiry_interval")
    with op.batch_alter_table("mqtt_retained") as table:
        table.drop_column("expiry_interval")
