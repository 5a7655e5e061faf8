"""When to read the audit log: a wake-up per registry change instead of a 10 ms poll.

The audit log stays the one source of truth (every change, in commit order); what changes is
how a gateway worker learns there is something new to read. Reading it every 10 ms cost an
idle service 13% of a core. Now:

- **PostgreSQL**: every audit row is written with ``pg_notify('tether_audit', id)`` in the
  same transaction (:func:`tether.cloud.registry.audit.write_audit`), so the notification
  exists exactly when the row does, whichever process or host made the change. Each worker
  holds one ``LISTEN`` connection. When it breaks, the signal says so (``current`` false)
  until it has reconnected and re-listened; the feed then re-reads from its last position
  before it calls itself current again, and the service refuses new verdicts meanwhile
  (fail closed: a revocation it cannot hear about must not let anyone in).
- **SQLite** (one host): every write changes the database file or its WAL. The signal asks
  Linux ``inotify`` (through libc; no package) to report writes to those files, and wakes on
  each: no SQL, no lock on the database, no timer at all while nothing changes. Where inotify
  is not available it compares their ``stat`` every ``FILE_INTERVAL`` instead.

Either way the feed also reads once per ``SAFETY_INTERVAL`` with no signal at all, so a
writer that does not notify (an older release's CLI) is followed within that bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Protocol

from sqlalchemy.engine import make_url

log = logging.getLogger("tether.cloud")

CHANNEL = "tether_audit"
SAFETY_INTERVAL = 2.0  # seconds: the longest the feed goes without reading the log
FILE_INTERVAL = 0.01  # seconds between two stat() of the SQLite files
RECONNECT_DELAY = 0.2
SETTLE_DELAYS = (0.005, 0.05)  # seconds after a SQLite file event (see FileChange)


class ChangeSignal(Protocol):
    """Wakes the feed when the audit log may have grown."""

    epoch: int  # bumped at every (re)connection: a read that spans a bump proves nothing

    @property
    def current(self) -> bool:
        """Whether every change from now on will wake the feed."""
        ...

    async def start(self) -> None:
        """Begin watching."""
        ...

    async def wait(self, timeout: float) -> None:
        """Return when a change may have happened, or after ``timeout`` seconds."""
        ...

    async def close(self) -> None:
        """Stop watching."""
        ...


def signal_for(database_url: str) -> ChangeSignal:
    """The signal that suits the registry's database."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        plain = url.set(drivername="postgresql")
        return PostgresNotify(plain.render_as_string(hide_password=False))
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return FileChange(Path(str(url.database)))
    return Interval()


class _Woken:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.epoch = 0

    def _wake(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()
        self._event.clear()


class Interval(_Woken):
    """No signal (an in-memory database): the feed reads every ``SAFETY_INTERVAL``."""

    @property
    def current(self) -> bool:
        return True

    async def start(self) -> None:
        """Nothing to watch."""

    async def close(self) -> None:
        """Nothing to stop."""


class _Inotify:
    """The few libc calls of inotify(7), through ctypes (Linux only)."""

    IN_MODIFY = 0x002
    IN_CLOSE_WRITE = 0x008
    IN_MOVED_TO = 0x080
    IN_CREATE = 0x100
    IN_NONBLOCK = 0o4000
    IN_CLOEXEC = 0o2000000

    def __init__(self, directory: Path) -> None:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = int(libc.inotify_init1(self.IN_NONBLOCK | self.IN_CLOEXEC))
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        mask = self.IN_MODIFY | self.IN_CLOSE_WRITE | self.IN_MOVED_TO | self.IN_CREATE
        if libc.inotify_add_watch(self.fd, os.fsencode(directory), mask) < 0:
            errno = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(errno, f"inotify_add_watch({directory}) failed")

    def names(self) -> list[str]:
        """The file names of the events queued now (drains the queue)."""
        import struct

        names: list[str] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return names
            offset = 0
            while offset + 16 <= len(data):
                _, _, _, length = struct.unpack_from("iIII", data, offset)
                raw = data[offset + 16 : offset + 16 + length]
                names.append(raw.rstrip(b"\0").decode("utf-8", "replace"))
                offset += 16 + length

    def close(self) -> None:
        os.close(self.fd)


class FileChange(_Woken):
    """SQLite: wakes when the database file or its WAL changes (see the module docstring)."""

    def __init__(self, database: Path, interval: float = FILE_INTERVAL) -> None:
        super().__init__()
        self._paths = (database, database.with_name(database.name + "-wal"))
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._inotify: _Inotify | None = None

    @property
    def current(self) -> bool:
        return True

    def _state(self) -> tuple[tuple[int, int], ...]:
        state = []
        for path in self._paths:
            try:
                info = os.stat(path)
                state.append((info.st_size, info.st_mtime_ns))
            except OSError:
                state.append((-1, -1))
        return tuple(state)

    async def start(self) -> None:
        """Watch with inotify, else start comparing the files' state."""
        try:
            self._inotify = _Inotify(self._paths[0].parent)
        except (OSError, AttributeError) as exc:
            log.info("no inotify (%s); watching the registry files with stat()", exc)
            self._inotify = None
            self._task = asyncio.create_task(self._watch(), name="tether-feed-files")
            return
        asyncio.get_running_loop().add_reader(self._inotify.fd, self._on_events)

    def _on_events(self) -> None:
        assert self._inotify is not None
        names = {path.name for path in self._paths}
        if any(name in names for name in self._inotify.names()):
            # SQLite writes the WAL frame (the event) a moment before it publishes it in the
            # shared-memory index readers consult: a read at once may not see the commit yet.
            # Wake after the write has settled, and once more in case the first was too soon.
            loop = asyncio.get_running_loop()
            for delay in SETTLE_DELAYS:
                loop.call_later(delay, self._wake)

    async def _watch(self) -> None:
        last = self._state()
        while True:
            await asyncio.sleep(self._interval)
            state = self._state()
            if state != last:
                last = state
                loop = asyncio.get_running_loop()
                for delay in SETTLE_DELAYS:  # as with inotify: let the commit settle
                    loop.call_later(delay, self._wake)

    async def close(self) -> None:
        """Stop watching."""
        inotify = self._inotify
        if inotify is not None:
            asyncio.get_running_loop().remove_reader(inotify.fd)
            inotify.close()
            self._inotify = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class PostgresNotify(_Woken):
    """PostgreSQL: ``LISTEN tether_audit`` on a connection of its own, reconnected on loss."""

    def __init__(self, conninfo: str) -> None:
        super().__init__()
        self._conninfo = conninfo
        self._listening = False
        self._task: asyncio.Task[None] | None = None
        self._connection: object | None = None

    @property
    def current(self) -> bool:
        return self._listening

    async def start(self) -> None:
        """Connect and LISTEN (in the background; ``current`` says when it is done)."""
        ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._listen(ready), name="tether-feed-notify")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(ready), 10.0)

    async def _listen(self, ready: asyncio.Future[None]) -> None:
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as connection:
                    self._connection = connection
                    await connection.execute(f"LISTEN {CHANNEL}")
                    self.epoch += 1
                    self._listening = True
                    self._wake()  # re-read from the last position: changes may have been missed
                    if not ready.done():
                        ready.set_result(None)
                    async for _ in connection.notifies():
                        self._wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error(
                    "registry change notifications lost (%s: %s); reconnecting",
                    type(exc).__name__,
                    exc,
                    extra={"tether_code": "feed_notify_lost"},
                )
            self._listening = False
            self._connection = None
            self._wake()
            await asyncio.sleep(RECONNECT_DELAY)

    async def close(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._listening = False
