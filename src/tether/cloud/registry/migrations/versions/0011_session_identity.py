"""The certificate (and its CA) a stored MQTT session was made under.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01

Issue 17: "a revoked or disabled identity's session is deleted, not resumed". A revocation
names a certificate (or a CA); a session stored by another worker or before a restart was
matched on kind and name only, so revoking a certificate left its offline session behind
for the device's next certificate to resume. NULL for sessions stored before this revision:
they are still matched by name (disable) and expire as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``certificate_fingerprint`` and ``issuer_fingerprint`` to ``mqtt_sessions``."""
    with op.batch_alter_table("mqtt_sessions") as table:
        table.add_column(sa.Column("certificate_fingerprint", sa.String(64), nullable=True))
        table.add_column(sa.Column("issuer_fingerprint", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop the two columns again."""
    with op.batch_alter_table("mqtt_sessions") as table:
        table.drop_column("issuer_fingerprint")
        table.drop_column("certificate_fingerprint")
