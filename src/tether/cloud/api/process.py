"""The admin API in a process of its own: what ``tether cloud serve`` runs beside the gateway.

Why a process and not a task on the gateway's loop (issue 14): on the loop, every API request
(TLS, HTTP parsing, the registry read behind a token check) shares one event loop and one GIL
with the gateway's handshakes and its revocation feed. The abuse test measured it: 120
keep-alive connections of random tokens, each refused cheaply, still delayed a revocation's
drop by 0.3-1.2 s, because the feed's registry reads waited for the GIL behind the API's
threads. In its own process the API's CPU is the operating system's to share, not the GIL's:
the gateway keeps its loop, its thread pool and its interpreter to itself. The API needs
nothing from the gateway: it reads and writes the registry, and every gateway process follows
the registry's audit log (a revocation through the API drops the session exactly as one made
by ``tether cloud revoke`` in another process does).

The child is started with the ``spawn`` method (a fresh interpreter: no inherited threads,
event loop or database connections). Its arguments, the online CA's passphrase among them,
travel through multiprocessing's pipe, never on a command line or in the environment. The
child reports its bound port (or the TetherError that stopped it) on a pipe; it stops on
SIGTERM (``stop``), ignores SIGINT (the parent stops it in order: API before gateway), and
exits by itself when the parent goes away (the pipe's end closes), so a killed ``serve`` never
leaves an orphan API behind. Tests and the demo still run ``ApiServer`` on a loop directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.errors import ConfigurationError, TetherError

if TYPE_CHECKING:
    from tether.cloud.hygiene import LiveView
    from tether.cloud.settings import CloudSettings

log = logging.getLogger("tether.api")

_START_TIMEOUT = 60.0  # seconds: a fresh interpreter imports Tether, migrates, loads the CA
_STOP_TIMEOUT = 15.0


@dataclass(frozen=True)
class ApiProcessArgs:
    """What the child needs (picklable): where the cloud is and how to serve its API."""

    data_dir: Path
    port: int | None  # None: api.port from cloud.json
    ca_passphrase: str | None  # the online device CA's, when api.device_ca is set
    log_level: str
    log_format: str = "text"  # or "json" (tether.cloud.observability.logs)
    metrics_port: int | None = None  # None: metrics.api_port from cloud.json
    publish_port: int | None = None  # None: publish.port from cloud.json (CRLs and OCSP)


class ApiStartError(ConfigurationError):
    """The API process could not start; the child's own error code and message."""

    code = "api_start_failed"


API_NICENESS = 5  # added to the API process's nice value (os.nice) at start


def _configure_child_logging(level: str, log_format: str = "text") -> None:
    from tether.cloud.observability.logs import formatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    logging.getLogger("alembic").setLevel(logging.WARNING)


async def _serve_child(args: ApiProcessArgs, conn: Connection, parent_alive: Connection) -> None:
    from tether.cloud.api.app import create_app
    from tether.cloud.api.publish import create_publish_app
    from tether.cloud.api.server import ApiServer
    from tether.cloud.crl_signing import OnlineCrl
    from tether.cloud.ocsp import OcspResponder
    from tether.cloud.operations import AdminOperations, check_online_ca
    from tether.cloud.registry import Registry
    from tether.cloud.settings import CloudSettings

    settings = CloudSettings.load(args.data_dir)
    online = None
    if settings.api.device_ca is not None:
        if args.ca_passphrase is None:
            raise ConfigurationError("the online device CA needs its passphrase")
        # Everything the online CA signs names where its revocation data is published.
        online = settings.online_ca(args.ca_passphrase)
    registry = Registry.open(settings.database_url)
    try:
        if online is not None:
            check_online_ca(registry, online)
        operations = AdminOperations(
            registry,
            root_certificate=settings.root_certificate(),
            online_ca=online,
            registration_code_ttl=timedelta(seconds=settings.api.registration_code_ttl),
            pinned_ca=settings.pinned_ca.read_bytes(),
            online_crl=None
            if online is None
            else OnlineCrl(
                online,
                validity=timedelta(days=settings.publish.crl_days),
                resign_before=timedelta(hours=settings.publish.resign_hours),
            ),
        )
        server = ApiServer(
            create_app(
                registry,
                root_certificate=operations.root_certificate,
                operations=operations,
                limits=settings.api_limits,
                live_view=_live_view(settings),
                gateway_metrics=_gateway_metrics(settings),
            ),
            host=settings.api.host,
            port=settings.api.port if args.port is None else args.port,
            certificate_chain=settings.server_chain,
            private_key=settings.server_key,
            limits=settings.api_limits,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        # The parent holds the only other end of this pipe: it reads EOF when the parent
        # exits, however it exits.
        loop.add_reader(parent_alive.fileno(), stop.set)
        port = await server.start()
        endpoints = None
        metrics_port = None
        if settings.metrics.enabled:
            from tether.cloud.observability.endpoints import ApiEndpoints

            endpoints = ApiEndpoints(
                server.app.state.tether_metrics,
                host=settings.metrics.host,
                port=settings.metrics.api_port if args.metrics_port is None else args.metrics_port,
            )
            try:
                metrics_port = await endpoints.start()
            except TetherError:
                await server.stop()
                raise
        publisher = None
        publish_port = None
        if settings.publish.enabled:
            publisher = ApiServer(
                create_publish_app(
                    operations,
                    ocsp_responder=None if online is None else OcspResponder(registry, online),
                ),
                host=settings.publish.host,
                port=settings.publish.port if args.publish_port is None else args.publish_port,
                certificate_chain=None,
                private_key=None,
                limits=settings.api_limits,
            )
            try:
                publish_port = await publisher.start()
            except TetherError:
                if endpoints is not None:
                    await endpoints.stop()
                await server.stop()
                raise
        conn.send(("ready", port, online is not None, metrics_port, publish_port))
        try:
            await stop.wait()
        finally:
            loop.remove_reader(parent_alive.fileno())
            if publisher is not None:
                await publisher.stop()
            if endpoints is not None:
                await endpoints.stop()
            await server.stop()
    finally:
        registry.close()


def _live_view(settings: CloudSettings) -> Callable[[], LiveView] | None:
    """How the API reads the gateway's sessions (its ``/sessions``), if metrics are on."""
    if not settings.metrics.enabled:
        return None
    from tether.cloud.observability.live import read_live_view

    return partial(read_live_view, settings.metrics.host, settings.metrics.port)


def _gateway_metrics(settings: CloudSettings) -> Callable[[], str] | None:
    """How the console's overview reads the gateway's ``/metrics``, if metrics are on."""
    if not settings.metrics.enabled:
        return None
    from tether.cloud.observability.overview import read_gateway_metrics

    return partial(read_gateway_metrics, settings.metrics.host, settings.metrics.port)


def run_child(main: Coroutine[Any, Any, None], conn: Connection, failure_code: str) -> None:
    """Run a child process's loop; a failure to start goes up ``conn`` as (error, code, text).

    Shared by the API process and the gateway workers (``tether.cloud.workers``): a
    ``TetherError`` keeps its own code and exits 3, anything else is ``failure_code``.
    """
    import uvloop

    try:
        uvloop.run(main)
    except TetherError as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", exc.code, exc.message))
        sys.exit(3)
    except Exception as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", failure_code, f"{type(exc).__name__}: {exc}"))
        raise


def _child_main(args: ApiProcessArgs, conn: Connection, parent_alive: Connection) -> None:
    """The API process: serve until SIGTERM or the parent's exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The admin API yields the CPU to the gateway and to whoever commits a revocation: on a
    # small machine a flood of (refused) API requests must not take the cores a revocation
    # needs (bench/abuse.py, token flood). Lower priority only; it still gets every idle cycle.
    with contextlib.suppress(OSError):
        os.nice(API_NICENESS)
    _configure_child_logging(args.log_level, args.log_format)
    run_child(_serve_child(args, conn, parent_alive), conn, "api_start_failed")


class ApiProcess:
    """The admin API in a child process; a ``Companion`` of ``serve_until_signalled``."""

    def __init__(self, args: ApiProcessArgs) -> None:
        """Nothing starts until :meth:`start`."""
        self.args = args
        self.signs = False  # whether the child loaded an online device CA
        self.metrics_port: int | None = None  # the child's /metrics listener, if any
        self.publish_port: int | None = None  # the child's plain-HTTP CRL/OCSP listener
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._alive: Connection | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    async def start(self) -> int:
        """Start the child and wait until it listens; returns its port.

        Raises ApiStartError with the child's code and message when it cannot start.
        """
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=False)
        watched, self._alive = context.Pipe(duplex=False)
        self._conn = parent
        self._process = context.Process(
            target=_child_main, args=(self.args, child, watched), name="tether-api", daemon=True
        )
        await asyncio.to_thread(self._process.start)  # startup only; never on a hot path
        child.close()
        watched.close()
        ready = await asyncio.to_thread(parent.poll, _START_TIMEOUT)
        message = parent.recv() if ready else None
        if message is None or message[0] != "ready":
            await self.stop()
            if message is None:
                raise ApiStartError("the admin API process did not start in time")
            raise ApiStartError(str(message[2]), code=str(message[1]))
        _, port, self.signs, self.metrics_port, self.publish_port = message
        # The child's end of ``parent`` closes when it exits: say so at once if it dies early.
        asyncio.get_running_loop().add_reader(parent.fileno(), self._exited)
        return int(port)

    def alive(self) -> bool:
        """Whether the child is running (for the gateway's ``/readyz``)."""
        return self._process is not None and self._process.is_alive()

    def _exited(self) -> None:
        loop = asyncio.get_running_loop()
        if self._conn is not None:
            loop.remove_reader(self._conn.fileno())
        process = self._process
        code = None if process is None else process.exitcode
        log.error(
            "the admin API process (pid %s) exited (code %s); the gateway keeps running, "
            "`tether cloud` commands still work; restart serve to get the API back",
            self.pid,
            code,
            extra={"tether_code": "api_process_exited"},
        )

    async def stop(self) -> None:
        """SIGTERM the child, wait for it to finish its requests; kill it if it hangs."""
        if self._conn is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._conn.fileno())
        process, self._process = self._process, None
        if process is not None and process.is_alive():
            process.terminate()
            await asyncio.to_thread(process.join, _STOP_TIMEOUT)
            if process.is_alive():
                process.kill()
                await asyncio.to_thread(process.join, 5)
        for conn in (self._conn, self._alive):
            if conn is not None:
                conn.close()
        self._conn = self._alive = None
