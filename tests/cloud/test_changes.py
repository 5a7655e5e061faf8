"""The change signal: a registry write wakes the feed, and a lost LISTEN is noticed.

Real stores: a SQLite file watched with inotify, and a throwaway PostgreSQL whose LISTEN
connection the test kills with ``pg_terminate_backend``. The service's fail-closed rule is
checked on a real gateway: while the signal is not current, a valid device is refused with
``registry_feed_behind``; once it listens again and the feed has re-read the log, it is let in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.cloud.conftest import ACTOR, Cloud
from tests.postgres import throwaway_postgres
from tests.support.mqtt import RawClient
from tether.cloud.changes import FileChange, PostgresNotify, signal_for
from tether.cloud.registry import Provisioning, Registry

WAIT = 20.0  # generous: a wake-up comes in milliseconds, the bound only ends a broken test


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with throwaway_postgres() as url:
        Registry.open(url).close()  # migrate once
        yield url


def _woken(signal, write) -> bool:  # type: ignore[no-untyped-def]
    """Start ``signal``, make one registry write, report whether it woke before ``WAIT``."""

    async def scenario() -> bool:
        await signal.start()
        try:
            await signal.wait(0.01)  # forget the wake-up of the start itself
            started = time.monotonic()
            await asyncio.get_running_loop().run_in_executor(None, write)
            await signal.wait(WAIT)
            return time.monotonic() - started < WAIT
        finally:
            await signal.close()

    return asyncio.run(scenario())


def test_a_sqlite_write_wakes_the_file_signal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry.open(url) as registry:
        signal = signal_for(url)
        assert isinstance(signal, FileChange)
        assert _woken(signal, lambda: registry.audit(actor=ACTOR, action="test.x", target="t"))


def test_a_postgres_write_from_another_connection_wakes_the_listener(postgres_url: str) -> None:
    with Registry.open(postgres_url) as registry:
        signal = signal_for(postgres_url)
        assert isinstance(signal, PostgresNotify)
        assert _woken(
            signal,
            lambda: registry.add_device("CHG-1", provisioning=Provisioning.CONSOLE, actor=ACTOR),
        )


def test_a_killed_listen_connection_is_noticed_and_replaced(postgres_url: str) -> None:
    signal = signal_for(postgres_url)
    assert isinstance(signal, PostgresNotify)
    with Registry.open(postgres_url) as registry:

        async def scenario() -> tuple[bool, int, int]:
            await signal.start()
            try:
                assert signal.current
                epoch = signal.epoch
                with registry._engine.begin() as connection:
                    connection.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
                        )
                    )
                async with asyncio.timeout(WAIT):
                    while signal.epoch == epoch or not signal.current:
                        await asyncio.sleep(0.01)
                return signal.current, epoch, signal.epoch
            finally:
                await signal.close()

        current, before, after = asyncio.run(scenario())
    assert current and after == before + 1


class _Deaf:
    """A change signal that has lost its connection (what PostgresNotify reports then)."""

    epoch = 0
    current = False

    async def start(self) -> None: ...

    async def wait(self, timeout: float) -> None:
        await asyncio.sleep(min(timeout, 0.05))

    async def close(self) -> None: ...


def test_a_worker_that_cannot_hear_changes_refuses_until_it_caught_up(cloud: Cloud) -> None:
    device = cloud.console_device("CHG-000001")
    deaf = _Deaf()
    cloud.service.changes = deaf  # type: ignore[assignment]
    time.sleep(0.3)  # the feed's next read ends with "not current"
    client = RawClient(cloud.port, cloud.tls_context(device))
    try:
        connack = client.connect("CHG-000001")
        assert connack is not None and connack.reason_str == "registry_feed_behind"
    finally:
        client.close()
    deaf.current = True
    deaf.epoch = 1
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        client = RawClient(cloud.port, cloud.tls_context(device))
        try:
            connack = client.connect("CHG-000001")
            if connack is not None and connack.reason_code == 0:
                break
        finally:
            client.close()
        time.sleep(0.1)
    else:
        raise AssertionError("the worker never accepted again")
