"""An event loop on a daemon thread: how synchronous code drives the asynchronous cloud.

``tether cloud serve`` owns its loop; the demo (which plays devices, a service and an operator
synchronously) and the tests (paho, awscrt, raw ``ssl`` clients) need the gateway or the whole
``CloudService`` running beside them instead. ``LoopThread`` is that bridge, written once:
``call`` runs a coroutine on the loop and waits for it (bounded), ``sync`` runs a plain
callable on the loop thread (for state the loop owns, unlocked), ``close`` stops the loop and
joins the thread. ``CloudThread`` is a ``CloudService`` (and optionally the admin API) on one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import uvloop

if TYPE_CHECKING:  # importing this module must not import the web stack (spawned children)
    from tether.cloud.api import ApiServer
    from tether.cloud.gateway import Identity
    from tether.cloud.service import CloudService

T = TypeVar("T")
CALL_TIMEOUT_S = 15.0
JOIN_TIMEOUT_S = 5.0


class LoopThread:
    """A uvloop event loop running forever on a daemon thread until ``close``."""

    def __init__(self, name: str = "tether-loop", *, timeout: float = CALL_TIMEOUT_S) -> None:
        self.timeout = timeout
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (``timeout`` s at most)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(self.timeout if timeout is None else timeout)

    def sync(self, fn: Callable[[], T]) -> T:
        """Run a plain callable on the loop thread (state the loop owns is not locked)."""

        async def wrapper() -> T:
            return fn()

        return self.call(wrapper())

    @property
    def running(self) -> bool:
        return not self.loop.is_closed() and self.thread.is_alive()

    def shutdown(self) -> None:
        """What a subclass stops on the loop before it ends (nothing here)."""

    def close(self) -> None:
        """``shutdown``, then stop the loop and join the thread; safe to call twice."""
        if not self.running:
            return
        try:
            self.shutdown()
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(JOIN_TIMEOUT_S)
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


class CloudThread(LoopThread):
    """A ``CloudService`` (and, once ``start_api`` is called, the admin API) on a loop thread.

    ``close`` stops the API, the service (closing every session), then the loop.
    """

    def __init__(self, service: CloudService, *, name: str = "tether-cloud") -> None:
        super().__init__(name)
        self.service = service
        self.port = 0
        self.api: ApiServer | None = None

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
        return self.sync(self.service.gateway.sessions)

    def shutdown(self) -> None:
        try:
            if self.api is not None:
                api, self.api = self.api, None
                self.call(api.stop())
        finally:
            if self.port:
                self.call(self.service.stop())
