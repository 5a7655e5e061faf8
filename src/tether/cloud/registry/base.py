"""What every aggregate of the registry stands on: the engines, the clock, transactions.

``RegistryBase`` holds the engines and the clock and opens the two kinds of transaction:
``_read`` (a snapshot) and ``_write`` (``BEGIN IMMEDIATE`` on SQLite, so writers queue instead
of failing). Every aggregate mixin (``cas``, ``devices``, ...) subclasses it, and
:class:`~tether.cloud.registry.registry.Registry` composes them. The module-level helpers are
the input checks and the paging every aggregate shares; the one serial grammar is the PKI's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from tether.cloud.registry.engine import BEGIN_OPTION
from tether.cloud.registry.errors import (
    ConcurrentChangeError,
    DatabaseUnavailableError,
    InvalidRegistryInputError,
)
from tether.cloud.registry.records import Page
from tether.pki.names import SERIAL_PATTERN

_T = TypeVar("_T")
_M = TypeVar("_M")

MAX_PAGE_SIZE = 1000
_FINGERPRINT_RE = re.compile(r"[0-9a-f]{64}")


class RegistryBase:
    """Engines, clock and transactions: the part of the registry every aggregate uses."""

    def __init__(self, engine: Engine, *, display_url: str) -> None:
        """Wrap an engine that is already migrated (see ``Registry.open``)."""
        self._engine = engine
        self._write_engine = engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        # One read statement is its own snapshot: no BEGIN/ROLLBACK round around it.
        self._single_statement_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._display_url = display_url
        self._clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    @contextmanager
    def _read(self) -> Iterator[Session]:
        try:
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                yield session
        except DBAPIError as exc:
            raise self._unavailable(exc) from exc

    @contextmanager
    def _write(self) -> Iterator[Session]:
        try:
            with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
                yield session
        except IntegrityError as exc:
            # The methods check constraints first; reaching here means a concurrent writer.
            raise ConcurrentChangeError(
                "A concurrent change to the registry conflicted with this one; nothing was "
                "changed, retry."
            ) from exc
        except DBAPIError as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: DBAPIError) -> DatabaseUnavailableError:
        return DatabaseUnavailableError(
            f"The registry database {self._display_url} failed: {db_reason(exc)}. "
            "Nothing was changed; check the database and retry."
        )


def flush_or(session: Session, conflict: Callable[[], Exception]) -> None:
    """Flush, turning a unique-constraint failure into the caller's own conflict error."""
    try:
        session.flush()
    except IntegrityError as exc:
        raise conflict() from exc


def load_one(session: Session, model: type[_M], where: Any, missing: Callable[[], Exception]) -> _M:
    """The one ``model`` row matching ``where``; raise ``missing()`` if there is none."""
    row = session.scalars(select(model).where(where)).first()
    if row is None:
        raise missing()
    return row


def db_reason(exc: DBAPIError) -> str:
    """The driver message, first line only: never the SQL statement or its parameters."""
    return str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__


def check_actor(actor: str) -> str:
    """Every change names who made it."""
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 200:
        raise InvalidRegistryInputError(
            "Every change needs an actor (who did it): 1 to 200 characters."
        )
    return actor


def check_serial(serial: str) -> str:
    """A device serial in the certificate profile's grammar (``pki.names.SERIAL_PATTERN``)."""
    if not isinstance(serial, str) or not SERIAL_PATTERN.fullmatch(serial):
        raise InvalidRegistryInputError(
            f"Device serial {serial!r} is not valid: use 1 to 64 characters of A-Z, a-z, "
            "0-9 and . _ - , starting with a letter or digit (the certificate profile's "
            "serial grammar)."
        )
    return serial


def check_fingerprint(fingerprint: str) -> str:
    """A SHA-256 fingerprint, normalised to 64 lowercase hex digits (colons allowed in)."""
    normalized = (
        fingerprint.replace(":", "").strip().lower() if isinstance(fingerprint, str) else ""
    )
    if not _FINGERPRINT_RE.fullmatch(normalized):
        raise InvalidRegistryInputError(
            f"{fingerprint!r} is not a SHA-256 fingerprint: give 64 hex digits (colons allowed)."
        )
    return normalized


def check_page(offset: int, limit: int) -> None:
    """A page window the registry serves (bounded, so a listing cannot load everything)."""
    if offset < 0 or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidRegistryInputError(
            f"Page offset must be >= 0 and limit between 1 and {MAX_PAGE_SIZE}."
        )


def page_of(
    session: Session,
    stmt: Any,
    order_by: Any,
    convert: Callable[[Any], _T],
    offset: int,
    limit: int,
) -> Page[_T]:
    """One page of ``stmt`` in ``order_by`` order, with the total it is a page of."""
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(order_by).offset(offset).limit(limit)).unique()
    return Page(items=tuple(convert(m) for m in rows), total=total, offset=offset, limit=limit)
