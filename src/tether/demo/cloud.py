"""The cloud, in-process: a ``CloudService`` on a uvloop event loop thread, and its log.

The demo is synchronous (it plays the devices, the service and the operator); the cloud runs
on its own event loop thread exactly as ``tether cloud serve`` runs it, the admin API
(``ApiServer``) on the same loop as the gateway. The gateway's log is
captured by a handler so the demo can show the refusal codes it logged, and so nothing of it
reaches the terminal uninvited.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import uvloop

from tether.cloud.api import ApiServer
from tether.cloud.gateway import Identity
from tether.cloud.service import CloudService

T = TypeVar("T")
CALL_TIMEOUT_S = 15.0
CAPTURED_LOGGER = "tether"


@dataclass(frozen=True)
class LogEvent:
    """One captured log record: its stable ``tether_code``, identity (if any) and message."""

    index: int
    level: str
    code: str | None
    identity: str | None
    message: str


class LogCapture(logging.Handler):
    """Collects every record of the ``tether`` loggers while installed; thread-safe.

    ``install`` stops the records propagating to the root logger (no terminal spam) and
    ``uninstall`` restores the logger as it was.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self._events: list[LogEvent] = []
        self._guard = threading.Lock()
        self._saved: tuple[int, bool] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        with self._guard:
            self._events.append(
                LogEvent(
                    index=len(self._events),
                    level=record.levelname,
                    code=getattr(record, "tether_code", None),
                    identity=getattr(record, "identity", None),
                    message=message,
                )
            )

    def install(self) -> None:
        """Attach to the ``tether`` logger at INFO, not propagating further."""
        logger = logging.getLogger(CAPTURED_LOGGER)
        self._saved = (logger.level, logger.propagate)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(self)

    def uninstall(self) -> None:
        """Detach and restore the logger's level and propagation."""
        logger = logging.getLogger(CAPTURED_LOGGER)
        logger.removeHandler(self)
        if self._saved is not None:
            logger.setLevel(self._saved[0])
            logger.propagate = self._saved[1]
            self._saved = None

    def mark(self) -> int:
        """A position; ``since(mark)`` returns what was logged after it."""
        with self._guard:
            return len(self._events)

    def since(self, mark: int) -> list[LogEvent]:
        """The events logged after ``mark``."""
        with self._guard:
            return self._events[mark:]

    def wait_for(
        self, codes: set[str], *, after: int, identity: str | None = None, timeout: float = 5.0
    ) -> LogEvent | None:
        """The first event after ``after`` with a code in ``codes`` (and ``identity``), or None."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.since(after):
                if event.code in codes and (identity is None or event.identity == identity):
                    return event
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)


class CloudThread:
    """A started ``CloudService`` (and admin API) on a uvloop loop in a daemon thread.

    ``close`` stops the API, the service, then the loop.
    """

    def __init__(self, service: CloudService) -> None:
        self.service = service
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="tether-demo-cloud", daemon=True
        )
        self.thread.start()
        self.port = 0
        self.api: ApiServer | None = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT_S) -> T:
        """Run ``coro`` on the cloud's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> int:
        """Start the gateway and the registry feed; returns the bound port."""
        self.port = self.call(self.service.start())
        return self.port

    def start_api(self, server: ApiServer) -> int:
        """Serve the admin API on the cloud's loop (next to the gateway); returns its port."""
        port = self.call(server.start())
        self.api = server
        return port

    def sessions(self) -> list[Identity]:
        """The identities connected right now."""

        async def read() -> list[Identity]:
            return self.service.gateway.sessions()

        return self.call(read())

    def close(self) -> None:
        """Stop the service (closing every session), then the loop; safe to call twice."""
        if self.loop.is_closed():
            return
        try:
            try:
                if self.api is not None:
                    api, self.api = self.api, None
                    self.call(api.stop())
            finally:
                if self.port:
                    self.call(self.service.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            if not self.thread.is_alive():
                self.loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
