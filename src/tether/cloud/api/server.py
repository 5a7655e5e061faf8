"""Serve the admin API over HTTPS on a running event loop (uvicorn as a task).

``tether cloud serve`` runs this inside the API's own process (``process.ApiProcess``); tests
and the demo run it on the cloud's loop.

The API reuses the gateway's certificate and key from the data directory and listens on its
own port. The socket is bound here, not by uvicorn, so a port in use is a clear
ConfigurationError instead of uvicorn's ``sys.exit`` inside a task, and port 0 works. The
cloud process owns SIGINT/SIGTERM; uvicorn's own signal capture is switched off.

uvicorn's own bounds come from ``api_limits``: ``limit_concurrency`` (``max_connections``:
connections plus requests in flight; uvicorn answers 503 beyond; its log line is tagged
``api_concurrency_limited``, counted, and shown at most every 10 s),
``h11_max_incomplete_event_size`` (``max_header_bytes``: a request line and headers larger than
that are a 400) and ``timeout_keep_alive``. Bodies and credentials are bounded by the app
itself (``guard.RequestGuard``), before a route reads anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from tether.cloud.api.limits import LimitCode
from tether.cloud.settings import ApiLimitOptions
from tether.errors import ConfigurationError

_START_TIMEOUT = 10.0
_UVICORN_LOG = "uvicorn.error"
_CONCURRENCY_MESSAGE = "Exceeded concurrency limit."
_LOG_EVERY = 10.0


class _ConcurrencyLimitLog(logging.Filter):
    """Tags uvicorn's concurrency refusals with our reason code, counts them, thins the log."""

    def __init__(self, on_limit: Callable[[], None]) -> None:
        super().__init__()
        self._on_limit = on_limit
        self._last = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != _CONCURRENCY_MESSAGE:
            return True
        self._on_limit()
        record.tether_code = LimitCode.CONCURRENCY_LIMITED.value
        now = time.monotonic()
        if now - self._last < _LOG_EVERY:
            return False
        self._last = now
        record.msg = f"admin API: too many connections (max_connections) ({record.tether_code})"
        return True


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the process that embeds it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Do nothing: ``serve_until_signalled`` handles SIGINT and SIGTERM."""
        yield


class ApiServer:
    """The admin API on ``host:port`` over TLS with ``certificate_chain`` and ``private_key``."""

    def __init__(
        self,
        app: FastAPI,
        *,
        host: str,
        port: int,
        certificate_chain: Path | None,
        private_key: Path | None,
        limits: ApiLimitOptions | None = None,
    ) -> None:
        """Nothing is bound until :meth:`start`.

        Without ``certificate_chain`` and ``private_key`` it serves plain HTTP: only for the
        CRL and OCSP app (``publish``), never for the admin API.
        """
        limits = limits or ApiLimitOptions()
        self.app = app
        self.host = host
        self.port = port
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            ssl_certfile=None if certificate_chain is None else str(certificate_chain),
            ssl_keyfile=None if private_key is None else str(private_key),
            ssl_ciphers="ECDHE+AESGCM:ECDHE+CHACHA20",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            limit_concurrency=limits.max_connections,
            h11_max_incomplete_event_size=limits.max_header_bytes,
            timeout_keep_alive=int(limits.keep_alive_timeout),
        )
        self._server = _EmbeddedServer(self.config)
        self._task: asyncio.Task[None] | None = None
        guard = getattr(app.state, "tether_guard", None)
        self._log_filter = _ConcurrencyLimitLog(
            (lambda: guard.counters.add(LimitCode.CONCURRENCY_LIMITED))
            if guard is not None
            else (lambda: None)
        )

    async def start(self) -> int:
        """Bind, start serving on the running loop; returns the bound port."""
        try:
            self.config.load()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"the API cannot load the server certificate and key: {exc}"
            ) from exc
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConfigurationError(
                f"the API cannot listen on {self.host}:{self.port}: {exc.strerror}; "
                "choose another port in cloud.json (api.port, or publish.port for CRLs and OCSP)"
            ) from exc
        bound = int(sock.getsockname()[1])
        logging.getLogger(_UVICORN_LOG).addFilter(self._log_filter)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="tether-api")
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raise what stopped it
                raise ConfigurationError("the API server stopped while starting")
            if asyncio.get_running_loop().time() > deadline:
                await self.stop()
                raise ConfigurationError("the API server did not start in time")
            await asyncio.sleep(0.01)
        self.port = bound
        return bound

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish, close the socket and the app's pools."""
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
        except TimeoutError:
            self._server.force_exit = True
            await self._task
        finally:
            self._task = None
            logging.getLogger(_UVICORN_LOG).removeFilter(self._log_filter)
            close = getattr(self.app.state, "tether_close", None)
            if close is not None:
                close()
