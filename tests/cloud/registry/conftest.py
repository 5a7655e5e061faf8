"""Fixtures: a registry on a real SQLite file in tmp_path, and a small test PKI."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.support.pki import Issued, raw_ca
from tether.cloud.registry import Registry


@pytest.fixture
def db_url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


@pytest.fixture
def registry(db_url: str) -> Iterator[Registry]:
    reg = Registry.open(db_url)
    yield reg
    reg.close()


@pytest.fixture(scope="session")
def root_ca() -> Issued:
    return raw_ca("Test Root CA")


@pytest.fixture(scope="session")
def device_ca(root_ca: Issued) -> Issued:
    return raw_ca("Test Device CA", root_ca)


@pytest.fixture(scope="session")
def factory_ca(root_ca: Issued) -> Issued:
    return raw_ca("Test Factory CA", root_ca)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "registry.db"


@pytest.fixture
def snapshot(
    db_path: Path, registry: Registry
) -> Callable[[], dict[str, list[tuple[object, ...]]]]:
    """Every row of every registry table, read with raw sqlite3 (to prove "nothing changed")."""

    def take() -> dict[str, list[tuple[object, ...]]]:
        with closing(sqlite3.connect(db_path)) as conn:
            return {
                table: conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()  # noqa: S608 - fixed names
                for table in ("cas", "devices", "certificates", "audit_log")
            }

    return take
