"""Initial registry: CAs, devices, certificates and the append-only audit log.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The value lists are frozen here on purpose: a migration must not change when the enums
# in the code grow; a later revision alters the CHECK constraints instead.
_CA_ROLES = "role IN ('device', 'factory', 'server', 'service')"
_CA_STATUSES = "status IN ('active', 'inactive', 'revoked')"
_DEVICE_STATUSES = "status IN ('enabled', 'disabled')"
_PROVISIONING = "provisioning IN ('factory', 'console', 'csr', 'jit')"
_CERT_STATES = "state IN ('pending', 'active', 'inactive', 'revoked')"

_APPEND_ONLY = "audit_log is append-only"


def upgrade() -> None:
    """Create the tables, their indexes and the audit log's append-only guard."""
    op.create_table(
        "cas",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("subject_key_id", sa.LargeBinary(64), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("allow_auto_registration", sa.Boolean(), nullable=False),
        sa.Column("not_before", sa.DateTime(), nullable=False),
        sa.Column("not_after", sa.DateTime(), nullable=False),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(_CA_ROLES, name="ck_cas_role"),
        sa.CheckConstraint(_CA_STATUSES, name="ck_cas_status"),
        sa.PrimaryKeyConstraint("id", name="pk_cas"),
        sa.UniqueConstraint("fingerprint", name="uq_cas_fingerprint"),
    )
    op.create_index("ix_cas_subject_key_id", "cas", ["subject_key_id"])

    op.create_table(
        "devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("serial", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("provisioning", sa.String(16), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=True),
        sa.Column("last_seen", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(_DEVICE_STATUSES, name="ck_devices_status"),
        sa.CheckConstraint(_PROVISIONING, name="ck_devices_provisioning"),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
        sa.UniqueConstraint("serial", name="uq_devices_serial"),
    )

    op.create_table(
        "certificates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("serial_number", sa.String(48), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("issuer_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=True),
        sa.Column("not_before", sa.DateTime(), nullable=False),
        sa.Column("not_after", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("revocation_reason", sa.String(32), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(_CERT_STATES, name="ck_certificates_state"),
        sa.ForeignKeyConstraint(
            ["issuer_id"], ["cas.id"], name="fk_certificates_issuer_id_cas", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name="fk_certificates_device_id_devices",
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_certificates"),
        sa.UniqueConstraint("fingerprint", name="uq_certificates_fingerprint"),
        sa.UniqueConstraint("issuer_id", "serial_number", name="uq_certificates_issuer_serial"),
    )
    op.create_index("ix_certificates_device_id", "certificates", ["device_id"])
    op.create_index("ix_certificates_issuer_state", "certificates", ["issuer_id", "state"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_target", "audit_log", ["target"])
    _create_append_only_guard()


def _create_append_only_guard() -> None:
    """Make the database itself refuse UPDATE, DELETE (and TRUNCATE) on the audit log."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{event.lower()} BEFORE {event} ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION tether_audit_log_append_only() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            f"RAISE EXCEPTION '{_APPEND_ONLY}' USING ERRCODE = 'insufficient_privilege'; "
            "END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION tether_audit_log_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
            "FOR EACH STATEMENT EXECUTE FUNCTION tether_audit_log_append_only()"
        )
    else:
        raise NotImplementedError(f"no append-only audit guard for database dialect {dialect!r}")


def downgrade() -> None:
    """Drop everything this revision created (development only: it drops the audit log)."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_delete")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_update_delete ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS tether_audit_log_append_only()")
    op.drop_index("ix_audit_log_target", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_certificates_issuer_state", table_name="certificates")
    op.drop_index("ix_certificates_device_id", table_name="certificates")
    op.drop_table("certificates")
    op.drop_table("devices")
    op.drop_index("ix_cas_subject_key_id", table_name="cas")
    op.drop_table("cas")
