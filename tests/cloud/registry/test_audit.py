"""The audit log: written with every change, listed newest first, append-only in the database."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import text

from tether.cloud.registry import InvalidRegistryInputError, Provisioning, Registry
from tether.errors import TetherError

Snapshot = Callable[[], dict[str, list[tuple[object, ...]]]]


def test_audit_appends_an_entry(registry: Registry) -> None:
    entry = registry.audit(
        actor="api",
        action="api.login_failed",
        target="admin:bob",
        details={"ip": "127.0.0.1", "attempt": 3, "locked": False, "note": None},
    )
    assert entry.id >= 1 and entry.at.tzinfo is not None
    assert dict(entry.details) == {"ip": "127.0.0.1", "attempt": 3, "locked": False, "note": None}
    assert registry.list_audit().items == (entry,)
    with pytest.raises(TypeError):
        entry.details["ip"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"actor": "", "action": "a.b", "target": "t"},
        {"actor": "x", "action": "Bad Action", "target": "t"},
        {"actor": "x", "action": "a.b", "target": ""},
        {"actor": "x", "action": "a.b", "target": "t", "details": {"k": [1, 2]}},
        {"actor": "x", "action": "a.b", "target": "t", "details": {"k": 1.5}},
    ],
)
def test_bad_audit_input_is_refused(
    registry: Registry, snapshot: Snapshot, kwargs: dict[str, object]
) -> None:
    before = snapshot()
    with pytest.raises(InvalidRegistryInputError):
        registry.audit(**kwargs)  # type: ignore[arg-type]
    assert snapshot() == before


def test_list_audit_newest_first_with_pages_and_target(registry: Registry) -> None:
    for i in range(5):
        registry.add_device(f"d{i}", provisioning=Provisioning.CONSOLE, actor="a")
    page = registry.list_audit(limit=2)
    assert [e.target for e in page.items] == ["d4", "d3"]
    assert (page.total, page.next_offset) == (5, 2)
    assert [e.target for e in registry.list_audit(offset=4, limit=2).items] == ["d0"]
    assert [e.target for e in registry.list_audit(target="d2").items] == ["d2"]
    ids = [e.id for e in registry.list_audit().items]
    assert ids == sorted(ids, reverse=True)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET actor = 'mallory'",
        "UPDATE audit_log SET details = '{}' WHERE id = 1",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE id = 1",
    ],
)
def test_database_refuses_to_rewrite_the_audit_log(
    registry: Registry, db_path: Path, snapshot: Snapshot, statement: str
) -> None:
    registry.add_device("d1", provisioning=Provisioning.CONSOLE, actor="alice")
    before = snapshot()
    with closing(sqlite3.connect(db_path)) as conn:  # raw SQL, bypassing the application
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(statement)
        conn.rollback()
    # And through SQLAlchemy on the registry's own engine.
    with registry._engine.connect() as conn, pytest.raises(Exception, match="append-only"):
        conn.execute(text(statement))
    assert snapshot() == before
    assert registry.list_audit().items[0].actor == "alice"


def test_change_and_audit_row_commit_together(registry: Registry, db_path: Path) -> None:
    """If the audit row cannot be written, the change it describes is rolled back too."""
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute(
            "CREATE TRIGGER test_audit_fails BEFORE INSERT ON audit_log "
            "BEGIN SELECT RAISE(ABORT, 'audit disk full'); END"
        )
        conn.commit()
    with pytest.raises(TetherError):
        registry.add_device("d1", provisioning=Provisioning.CONSOLE, actor="a")
    with closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT count(*) FROM devices").fetchone()[0] == 0
        conn.execute("DROP TRIGGER test_audit_fails")
        conn.commit()
    registry.add_device("d1", provisioning=Provisioning.CONSOLE, actor="a")
    assert registry.list_audit().total == 1
