"""Database engines for the registry: URL checks, SQLite pragmas, safe error messages.

SQLite is the default store, so it is set up for crash safety and concurrency: WAL (readers
never block the writer), ``synchronous=FULL`` (a commit that returned is on disk, so an
acknowledged revocation survives power loss), foreign keys on, a busy timeout, and write
transactions that start with ``BEGIN IMMEDIATE`` so concurrent writers queue on the busy
timeout instead of failing half-way with "database is locked".
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import ConnectionPoolEntry

from tether.cloud.registry.errors import DatabaseURLError

# Execution option naming how a SQLite transaction begins ("IMMEDIATE" for writers).
BEGIN_OPTION = "tether_sqlite_begin"

_SUPPORTED = ("sqlite", "postgresql")


def parse_url(url: str) -> URL:
    """Parse and check a registry URL; bare ``postgresql://`` means psycopg 3.

    Raises DatabaseURLError for anything but a SQLite file or PostgreSQL.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseURLError(
            "The database URL cannot be parsed; use sqlite:///path/to/registry.db or "
            "postgresql+psycopg://user@host/dbname."
        ) from exc
    if parsed.get_backend_name() not in _SUPPORTED:
        raise DatabaseURLError(
            f"Unsupported database {parsed.get_backend_name()!r} in "
            f"{safe_url(parsed)}; use SQLite or PostgreSQL."
        )
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise DatabaseURLError(
            "An in-memory SQLite registry forgets every CA, device and revocation; "
            "give a file, e.g. sqlite:///var/lib/tether/registry.db."
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def safe_url(url: URL) -> str:
    """The URL as it may appear in a message or a log: the password is masked."""
    return url.render_as_string(hide_password=True)


def create_registry_engine(url: URL, *, busy_timeout_s: float = 5.0) -> Engine:
    """Create the engine for ``url`` (already checked by :func:`parse_url`).

    Raises DatabaseURLError when the database driver is not installed.
    """
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = 10
    sqlite = url.get_backend_name() == "sqlite"
    if sqlite:
        connect_args["timeout"] = busy_timeout_s
    try:
        # A pooled PostgreSQL connection may have been cut by a restart or a proxy: ping it
        # before use. A SQLite "connection" is an open file; a ping would only cost a query
        # on every handshake.
        # SQLite: a pool as large as the threads that read at once (enrollment, EST, the
        # verdict lane), so a storm does not open and PRAGMA-configure overflow connections
        # per read (the default 5 + 10 overflow churned under 16 enrollment threads).
        pool = {"pool_size": 32, "max_overflow": 32} if sqlite else {}
        engine = create_engine(url, connect_args=connect_args, pool_pre_ping=not sqlite, **pool)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise DatabaseURLError(
            f"The driver for {safe_url(url)} is not installed; for PostgreSQL install "
            "tether[postgres] (psycopg 3)."
        ) from exc
    if url.get_backend_name() == "sqlite":
        _configure_sqlite(engine, busy_timeout_ms=int(busy_timeout_s * 1000))
    return engine


def _configure_sqlite(engine: Engine, *, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from pysqlite (it would not BEGIN before a SELECT,
        # so reads would not be isolated); SQLAlchemy's "begin" event emits BEGIN instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms:d}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return  # one statement on its own: SQLite runs it as its own transaction
        mode = options.get(BEGIN_OPTION, "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE"):
            raise ValueError(f"unknown SQLite BEGIN mode {mode!r}")
        connection.exec_driver_sql(f"BEGIN {mode}")
