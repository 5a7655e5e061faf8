"""Alembic, configured in code: an installed Tether migrates its own registry.

There is no alembic.ini to ship or find; the script location is the ``migrations`` folder
next to this module.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine

from tether.cloud.registry.engine import BEGIN_OPTION
from tether.cloud.registry.errors import SchemaVersionError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIGRATION_BUSY_TIMEOUT_MS = 120_000  # how long an opener waits for another's migration


def alembic_config() -> Config:
    """An Alembic Config pointing at the packaged migrations (``%`` escaped for configparser)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return config


def _script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def _known(revision: str) -> bool:
    try:
        return _script_directory().get_revision(revision) is not None
    except CommandError:
        return False


def head_revision() -> str:
    """The newest revision the code knows."""
    head = _script_directory().get_current_head()
    if head is None:  # pragma: no cover - the package always ships revisions
        raise RuntimeError("the registry migrations have no head revision")
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (``None`` for an empty database)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the database to head in one transaction; a database at head is left alone.

    Raises SchemaVersionError when the database is at a revision the code does not know.

    On SQLite the transaction begins IMMEDIATE, so two processes opening a new registry at
    once migrate one after the other instead of both creating tables. Foreign keys are off
    while a SQLite migration runs (the pragma cannot change inside a transaction): Alembic's
    batch mode rebuilds a table by copy, drop and rename, and the drop would trip the rows
    that reference it. Before the commit ``PRAGMA foreign_key_check`` must come back empty,
    so a migration cannot leave a dangling reference behind.
    """
    with engine.connect() as outer:
        sqlite = outer.dialect.name == "sqlite"
        raw = outer.connection.dbapi_connection  # not an SQLAlchemy execute: no autobegin
        busy = None
        if sqlite and raw is not None:
            raw.execute("PRAGMA foreign_keys=OFF")
            # A process that opens the registry while another migrates it waits for that
            # migration (a one-time start-up cost, seconds on a slow disk) instead of failing
            # after the ordinary busy timeout.
            busy = raw.execute("PRAGMA busy_timeout").fetchone()[0]
            raw.execute(f"PRAGMA busy_timeout={MIGRATION_BUSY_TIMEOUT_MS:d}")
        try:
            options = outer.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
            with options.begin():
                _upgrade_in(options, check_foreign_keys=sqlite)
        finally:
            if sqlite and raw is not None:
                raw.execute("PRAGMA foreign_keys=ON")
                raw.execute(f"PRAGMA busy_timeout={int(busy):d}")


def _upgrade_in(connection: Connection, *, check_foreign_keys: bool) -> None:
    current = current_revision(connection)
    if current == head_revision():
        return
    if current is not None and not _known(current):
        raise SchemaVersionError(
            f"The registry database is at schema revision {current!r}, which this version "
            "of Tether does not know (was it opened by a newer release?); upgrade Tether."
        )
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
    if check_foreign_keys:
        dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if dangling:
            raise SchemaVersionError(
                f"Migrating the registry would leave {len(dangling)} dangling references "
                f"(first: {tuple(dangling[0])}); nothing was changed. Report this as a bug."
            )
