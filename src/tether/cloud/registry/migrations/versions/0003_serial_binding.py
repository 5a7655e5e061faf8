"""A serial belongs to the CA that first vouched for it: devices.ca_id.

Existing devices are bound to the issuer of their first certificate (the lowest certificate
id); a device with no certificate stays unbound until its first one is registered.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add devices.ca_id and bind every device to the issuer of its first certificate.

    On SQLite this is a batch table rebuild; ``migrate.upgrade`` runs it with foreign keys
    off and checks them before the commit.
    """
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("ca_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_devices_ca_id_cas", "cas", ["ca_id"], ["id"], ondelete="RESTRICT"
        )
        batch.create_index("ix_devices_ca_id", ["ca_id"])
    op.execute(
        "UPDATE devices SET ca_id = (SELECT c.issuer_id FROM certificates c "
        "WHERE c.device_id = devices.id ORDER BY c.id LIMIT 1)"
    )


def downgrade() -> None:
    """Drop the binding column."""
    with op.batch_alter_table("devices") as batch:
        batch.drop_index("ix_devices_ca_id")
        batch.drop_constraint("fk_devices_ca_id_cas", type_="foreignkey")
        batch.drop_column("ca_id")
