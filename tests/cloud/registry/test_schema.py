"""Migrations, engine settings, schema invariants and storage errors."""

from __future__ import annotations

import socket
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from tests.support.pki import Issued, raw_leaf
from tether.cloud.registry import (
    CARole,
    DatabaseUnavailableError,
    DatabaseURLError,
    Provisioning,
    Registry,
    SchemaVersionError,
)
from tether.cloud.registry.migrate import MIGRATIONS_DIR, alembic_config, head_revision
from tether.cloud.registry.models import Base
from tether.errors import ConfigurationError, StorageError


def _revision(db_path: Path) -> str:
    with closing(sqlite3.connect(db_path)) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_open_upgrades_an_empty_database_to_head(db_path: Path) -> None:
    assert not db_path.exists()
    with Registry.open(f"sqlite:///{db_path}"):
        pass
    assert _revision(db_path) == head_revision() == "0011"
    tables = set(inspect(create_engine(f"sqlite:///{db_path}")).get_table_names())
    assert {"cas", "devices", "certificates", "audit_log", "alembic_version"} <= tables


def test_reopen_is_idempotent_and_keeps_data(db_url: str, db_path: Path) -> None:
    with Registry.open(db_url) as reg:
        reg.add_device("dev-1", provisioning=Provisioning.CONSOLE, actor="t")
    for _ in range(2):
        with Registry.open(db_url) as reg:
            assert reg.get_device("dev-1").serial == "dev-1"
            assert reg.list_audit().total == 1
    assert _revision(db_path) == head_revision()
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1


def test_models_match_the_migration(registry: Registry) -> None:
    """The ORM classes and migration 0001 describe the same schema (no autogenerate diff)."""
    with registry._engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert diff == []


def test_migrations_are_packaged_without_an_ini() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert list((MIGRATIONS_DIR / "versions").glob("0001_*.py"))
    assert not list(MIGRATIONS_DIR.parent.rglob("alembic.ini"))


def test_sqlite_is_set_up_for_durability_and_concurrency(registry: Registry) -> None:
    with registry._engine.connect() as conn:
        pragmas = {
            p: conn.exec_driver_sql(f"PRAGMA {p}").scalar()
            for p in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        }
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 2,
        "foreign_keys": 1,
        "busy_timeout": 5000,
    }


def test_no_column_can_hold_a_private_key(registry: Registry) -> None:
    """Only key *identifiers* may have "key" in their name; there is nowhere to put a key."""
    allowed = {"subject_key_id"}
    inspector = inspect(registry._engine)
    columns = [
        column["name"]
        for table in inspector.get_table_names()
        for column in inspector.get_columns(table)
    ]
    assert "fingerprint" in columns
    assert [c for c in columns if "key" in c.lower() and c not in allowed] == []


def test_gateway_lookups_are_indexed(registry: Registry) -> None:
    inspector = inspect(registry._engine)

    def indexed(table: str) -> set[tuple[str, ...]]:
        cols = {tuple(ix["column_names"]) for ix in inspector.get_indexes(table)}
        cols |= {tuple(uq["column_names"]) for uq in inspector.get_unique_constraints(table)}
        return cols

    assert ("fingerprint",) in indexed("certificates")
    assert ("issuer_id", "serial_number") in indexed("certificates")
    assert ("serial",) in indexed("devices")
    assert ("fingerprint",) in indexed("cas")
    assert ("subject_key_id",) in indexed("cas")


@pytest.mark.parametrize(
    "url",
    ["not a url", "mysql://u@h/db", "sqlite://", "sqlite:///:memory:"],
)
def test_bad_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(DatabaseURLError) as info:
        Registry.open(url)
    assert isinstance(info.value, ConfigurationError)
    assert info.value.code == "invalid_database_url"


def test_unwritable_sqlite_path_is_a_storage_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "registry.db"
    with pytest.raises(DatabaseUnavailableError) as info:
        Registry.open(f"sqlite:///{missing}")
    assert isinstance(info.value, StorageError)
    assert info.value.code == "database_unavailable"
    assert str(missing) in info.value.message
    assert not missing.parent.exists()


def test_unreachable_postgres_names_the_url_without_its_password() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://tether:s3cr3t-pw@127.0.0.1:{port}/registry"
    with pytest.raises(DatabaseUnavailableError) as info:
        Registry.open(url)
    message = info.value.message
    assert "s3cr3t-pw" not in message
    assert f"postgresql+psycopg://tether:***@127.0.0.1:{port}/registry" in message


def test_a_locked_database_is_a_storage_error_and_changes_nothing(
    registry: Registry, db_path: Path
) -> None:
    registry.add_device("dev-1", provisioning=Provisioning.CONSOLE, actor="t")
    impatient = Registry.open(f"sqlite:///{db_path}", busy_timeout_s=0.2)
    try:
        with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
            conn.execute("BEGIN IMMEDIATE")  # another writer holds the lock too long
            with pytest.raises(StorageError) as info:
                impatient.add_device("dev-2", provisioning=Provisioning.CONSOLE, actor="t")
            conn.execute("ROLLBACK")
    finally:
        impatient.close()
    assert info.value.code == "database_unavailable"
    assert "locked" in info.value.message
    assert registry.list_devices().total == 1
    assert registry.list_audit().total == 1


def test_unknown_schema_revision_is_refused(db_url: str, db_path: Path) -> None:
    Registry.open(db_url).close()
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
        conn.commit()
    with pytest.raises(SchemaVersionError) as info:
        Registry.open(db_url)
    assert isinstance(info.value, ConfigurationError)
    assert info.value.code == "unknown_schema_revision"
    assert _revision(db_path) == "9999_future"


def test_concurrent_first_opens_migrate_once(db_url: str, db_path: Path) -> None:
    barrier = threading.Barrier(4)
    opened: list[Registry] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        barrier.wait(timeout=10)
        try:
            opened.append(Registry.open(db_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for reg in opened:
        reg.close()
    assert errors == [] and len(opened) == 4
    assert _revision(db_path) == head_revision()


def test_registry_is_a_context_manager_with_a_safe_url(db_url: str) -> None:
    with Registry.open(db_url) as reg:
        assert reg.url == db_url
        reg.add_device("d1", provisioning=Provisioning.CONSOLE, actor="a")


def test_migration_0003_binds_existing_devices_to_their_first_issuer(
    db_url: str, device_ca: Issued, factory_ca: Issued
) -> None:
    with Registry.open(db_url) as reg:
        ca_fp = reg.register_ca(device_ca.certificate, role=CARole.DEVICE, actor="t").fingerprint
        reg.add_device("dev-1", provisioning=Provisioning.CONSOLE, actor="t")
        reg.add_certificate(raw_leaf(device_ca, "dev-1").certificate, device_serial="dev-1",
                            issuer_fingerprint=ca_fp, actor="t")  # fmt: skip
        reg.add_device("dev-2", provisioning=Provisioning.CONSOLE, actor="t")  # no certificate
    # Back to the schema before the binding existed, then forward again as an upgrade would.
    engine = create_engine(db_url)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0002")
    assert "ca_id" not in {c["name"] for c in inspect(engine).get_columns("devices")}
    engine.dispose()
    with Registry.open(db_url) as reg:
        assert reg.get_device("dev-1").ca_fingerprint == ca_fp
        assert reg.get_device("dev-2").ca_fingerprint is None
