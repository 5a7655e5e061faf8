"""The in-process cloud's log, captured for the demo.

The demo is synchronous (it plays the devices, the service and the operator); the cloud runs
on its own event loop thread (``tether.cloud.loop_thread.CloudThread``) exactly as
``tether cloud serve`` runs it, the admin API on the same loop as the gateway. The gateway's
log is captured by a handler so the demo can show the refusal codes it logged, and so nothing
of it reaches the terminal uninvited.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TypeVar

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
