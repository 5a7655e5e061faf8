"""A small plain-HTTP listener for ``/metrics``, ``/healthz`` and ``/readyz``, on the loop.

Why not uvicorn or ``prometheus_client.start_http_server``: the gateway process must not gain a
second web stack or a thread that competes with its handshakes for the GIL, and what is served
here is three fixed GET routes. Why plain HTTP: the listener binds loopback by default
(``metrics.host`` in ``cloud.json``), where the scraper and the health checker run; exposing it
further is an operator's decision (a reverse proxy with TLS, or a firewall rule), and nothing
served here is secret (counts, reason codes, no serial, no address).

Every bound is fixed and small: at most ``MAX_CLIENTS`` connections at once (one more is closed
at accept), a request head of at most ``MAX_HEAD`` bytes read within ``READ_TIMEOUT`` seconds,
one request per connection (``Connection: close``), GET and HEAD only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from tether.errors import ConfigurationError

log = logging.getLogger("tether.observability")

MAX_CLIENTS = 16
MAX_HEAD = 8 * 1024
READ_TIMEOUT = 5.0
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request"}
_REASONS |= {503: "Service Unavailable", 500: "Internal Server Error"}


@dataclass(frozen=True)
class Reply:
    """One response: status, content type, body."""

    status: int
    content_type: str
    body: bytes


Handler = Callable[[], Awaitable[Reply]]


class ObservabilityListener:
    """Serves fixed GET routes (path -> handler) on ``host:port`` until stopped."""

    def __init__(self, routes: Mapping[str, Handler], *, host: str, port: int) -> None:
        self.routes = dict(routes)
        self.host = host
        self.requested_port = port
        self._server: asyncio.AbstractServer | None = None
        self._clients = 0

    @property
    def port(self) -> int:
        """The bound port (after ``start``)."""
        if self._server is None or not self._server.sockets:
            raise ConfigurationError("the observability listener is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def start(self) -> int:
        """Bind and serve; returns the port. Raises ``ConfigurationError`` if it cannot bind."""
        try:
            self._server = await asyncio.start_server(
                self._serve, self.host, self.requested_port, limit=MAX_HEAD
            )
        except OSError as exc:
            raise ConfigurationError(
                f"Cannot listen for metrics on {self.host}:{self.requested_port} ({exc}); set "
                "another metrics port in cloud.json or stop the process using it.",
                code="metrics_bind_failed",
            ) from exc
        return self.port

    async def stop(self) -> None:
        """Stop accepting and close the listener."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_CLIENTS:
            writer.close()
            return
        self._clients += 1
        try:
            reply, head_only = await self._answer(reader)
            status_line = f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}\r\n"
            headers = (
                f"Content-Type: {reply.content_type}\r\nContent-Length: {len(reply.body)}\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n"
            )
            writer.write((status_line + headers).encode("ascii"))
            if not head_only:
                writer.write(reply.body)
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
        except (OSError, TimeoutError):
            pass
        finally:
            self._clients -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[Reply, bool]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            return _text(400, "bad request\n"), False
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3:
            return _text(400, "bad request\n"), False
        method, target = parts[0], parts[1].decode("ascii", "replace").split("?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return _text(405, "GET only\n"), False
        handler = self.routes.get(target)
        if handler is None:
            return _text(404, f"not found; try {', '.join(sorted(self.routes))}\n"), False
        try:
            return await handler(), method == b"HEAD"
        except Exception:
            log.exception(
                "observability route %s failed", target, extra={"tether_code": "metrics_error"}
            )
            return _text(500, "internal error\n"), False


def _text(status: int, text: str) -> Reply:
    return Reply(status, "text/plain; charset=utf-8", text.encode())
