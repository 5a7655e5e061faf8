"""Gateway workers: N processes on one port, each its own loop, verdict path and feed.

``tether cloud serve --workers N`` (N > 1, or a ``nats_url`` in cloud.json) runs the gateway
as N child processes that each bind the gateway port with ``SO_REUSEPORT`` (the kernel spreads
new connections over them), open their own registry connection, follow the change feed
themselves (a revocation drops a session on whichever worker holds it) and join the bus
(:class:`~tether.cloud.bus.nats.NatsBus`) for messages and session takeover between workers
and hosts. One worker crashing does not stop the others: the supervisor restarts it (at most
``MAX_RESTARTS`` times a minute; beyond that it stops the service rather than loop).

Children start with ``spawn`` (a fresh interpreter, nothing inherited) and report their bound
port on a pipe, like the API process (:mod:`tether.cloud.api.process`), and exit by themselves
when the supervisor goes away (its local nats-server has a watcher of its own:
:mod:`tether.cloud.bus.natsd`). The first worker binds the
configured port (``0``: any free port); the others bind the port it got. With enrollment on,
every worker answers ``$tether/`` requests with the operational CA's key (its passphrase comes
over the spawn pipe) and the first one also listens for EST. The first
worker's ``/metrics`` listener is on ``metrics.port`` (what the API's ``/sessions`` and the
console read); the others take a free port each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tether.errors import ConfigurationError, TetherError

if TYPE_CHECKING:
    from tether.cloud.enrollment.runtime import EnrollmentRuntime

log = logging.getLogger("tether.cloud")

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
MAX_RESTARTS = 5  # per worker per minute


class WorkerStartError(ConfigurationError):
    """A gateway worker could not start; the child's own error code and message."""

    code = "worker_start_failed"


@dataclass(frozen=True)
class WorkerArgs:
    """What one worker child needs (picklable)."""

    data_dir: Path
    index: int
    port: int | None  # None: gateway.port from cloud.json
    nats_servers: tuple[str, ...]
    log_level: str
    log_format: str = "text"
    metrics_port: int | None = None  # None: metrics.port from cloud.json (worker 0)
    # The operational CA's passphrase when enrollment is on (each worker signs what it
    # enrolls, as the one gateway process does). Sent over the spawn pipe, never in argv/env.
    ca_passphrase: str | None = field(default=None, repr=False)


async def _serve_worker(args: WorkerArgs, conn: Connection, parent_alive: Connection) -> None:
    from tether.cloud.bus.nats import NatsBus
    from tether.cloud.registry import Registry
    from tether.cloud.service import CloudService
    from tether.cloud.settings import CloudSettings

    settings = CloudSettings.load(args.data_dir)
    overrides: dict[str, object] = {} if args.port is None else {"port": args.port}
    registry = Registry.open(settings.database_url)
    try:
        bus = NatsBus(args.nats_servers, name=f"tether-gateway-{args.index}")
        gateway_settings = replace(settings.gateway_settings(**overrides), reuse_port=True)
        service = CloudService(registry, gateway_settings, bus=bus, mqtt_state=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)

        # The supervisor is gone without stopping us (SIGKILL): stop by ourselves.
        loop.add_reader(parent_alive.fileno(), stop.set)
        port = await service.start()
        endpoints = None
        metrics_port = None
        started: list[EnrollmentRuntime] = []
        try:
            if settings.enrollment.enabled:
                from tether.cloud.enrollment.runtime import enrollment_companions

                for extra in enrollment_companions(
                    settings, service, args.ca_passphrase, est=args.index == 0
                ):
                    await extra.start()
                    started.append(extra)
            if settings.metrics.enabled:
                from tether.cloud.observability.endpoints import GatewayEndpoints

                base = settings.metrics.port if args.metrics_port is None else args.metrics_port
                endpoints = GatewayEndpoints(
                    service,
                    host=settings.metrics.host,
                    port=base if args.index == 0 else 0,
                    feed_max_lag=settings.metrics.feed_max_lag,
                )
                metrics_port = await endpoints.start()
            conn.send(("ready", port, metrics_port))
            await stop.wait()
        finally:
            loop.remove_reader(parent_alive.fileno())
            if endpoints is not None:
                await endpoints.stop()
            for extra in reversed(started):
                await extra.stop()
            await service.stop()
    finally:
        registry.close()


def _worker_main(args: WorkerArgs, conn: Connection, parent_alive: Connection) -> None:
    from tether.cloud.api.process import _configure_child_logging, run_child

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops workers in order
    _configure_child_logging(args.log_level, args.log_format)
    run_child(_serve_worker(args, conn, parent_alive), conn, "worker_start_failed")


class _Worker:
    """One child process and its pipes."""

    def __init__(self, args: WorkerArgs) -> None:
        self.args = args
        self.process: multiprocessing.process.BaseProcess | None = None
        self.conn: Connection | None = None
        self.alive_pipe: Connection | None = None
        self.port = 0
        self.metrics_port: int | None = None
        self.restarts: list[float] = []

    async def start(self) -> int:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe(duplex=False)
        watched, self.alive_pipe = context.Pipe(duplex=False)
        self.conn = parent
        self.process = context.Process(
            target=_worker_main,
            args=(self.args, child, watched),
            name=f"tether-gateway-{self.args.index}",
            daemon=True,
        )
        await asyncio.to_thread(self.process.start)
        child.close()
        watched.close()
        ready = await asyncio.to_thread(parent.poll, START_TIMEOUT)
        message = parent.recv() if ready else None
        if message is None or message[0] != "ready":
            await self.stop()
            if message is None:
                raise WorkerStartError(f"gateway worker {self.args.index} did not start in time")
            raise WorkerStartError(str(message[2]), code=str(message[1]))
        _, self.port, self.metrics_port = message
        return int(self.port)

    async def stop(self) -> None:
        process, self.process = self.process, None
        if self.conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.conn.fileno())
        if process is not None and process.is_alive():
            process.terminate()
            await asyncio.to_thread(process.join, STOP_TIMEOUT)
            if process.is_alive():
                process.kill()
                await asyncio.to_thread(process.join, STOP_TIMEOUT)
        for pipe in (self.conn, self.alive_pipe):
            if pipe is not None:
                pipe.close()
        self.conn = self.alive_pipe = None


class GatewayWorkers:
    """N gateway workers on one port, supervised; a ``Companion`` of the serve loop."""

    def __init__(
        self,
        data_dir: Path,
        count: int,
        nats_servers: tuple[str, ...],
        *,
        port: int | None,
        log_level: str,
        log_format: str = "text",
        metrics_port: int | None = None,
        ca_passphrase: str | None = None,
    ) -> None:
        if count < 1:
            raise ConfigurationError(
                f"--workers must be at least 1 (got {count})", code="workers_invalid"
            )
        self._args = [
            WorkerArgs(
                data_dir,
                index,
                port,
                nats_servers,
                log_level,
                log_format,
                metrics_port,
                ca_passphrase,
            )
            for index in range(count)
        ]
        self.workers: list[_Worker] = []
        self.failed = asyncio.Event()  # set when a worker keeps dying: the service stops
        self._stopping = False
        self._restarting: set[asyncio.Task[None]] = set()

    @property
    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [w.process.pid for w in self.workers if w.process is not None and w.process.pid]

    @property
    def metrics_ports(self) -> list[int | None]:
        """Each worker's ``/metrics`` port (None when metrics are off)."""
        return [w.metrics_port for w in self.workers]

    async def start(self) -> int:
        """Start every worker (the first decides the port); returns the gateway port."""
        first = _Worker(self._args[0])
        self.workers.append(first)
        try:
            port = await first.start()
            self._watch(first)
            others = [_Worker(_with_port(args, port)) for args in self._args[1:]]
            self.workers += others
            await asyncio.gather(*(worker.start() for worker in others))  # side by side
            for worker in others:
                self._watch(worker)
        except BaseException:
            await self.stop()
            raise
        return port

    async def stop(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL after a bound)."""
        self._stopping = True
        await asyncio.gather(*(worker.stop() for worker in self.workers))

    def alive(self) -> bool:
        """Whether every worker runs."""
        return all(w.process is not None and w.process.is_alive() for w in self.workers)

    def _watch(self, worker: _Worker) -> None:
        assert worker.conn is not None
        loop = asyncio.get_running_loop()
        loop.add_reader(worker.conn.fileno(), lambda: self._exited(worker))

    def _exited(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        if worker.conn is not None:
            loop.remove_reader(worker.conn.fileno())
        if self._stopping:
            return
        code = worker.process.exitcode if worker.process is not None else None
        now = time.monotonic()
        worker.restarts = [t for t in worker.restarts if now - t < 60] + [now]
        log.error(
            "gateway worker %d exited (code %s); %s",
            worker.args.index,
            code,
            "restarting" if len(worker.restarts) <= MAX_RESTARTS else "stopping the service",
            extra={"tether_code": "worker_exited"},
        )
        if len(worker.restarts) > MAX_RESTARTS:
            self.failed.set()
            return
        task = loop.create_task(self._restart(worker))
        self._restarting.add(task)
        task.add_done_callback(self._restarting.discard)

    async def _restart(self, worker: _Worker) -> None:
        await worker.stop()
        worker.args = _with_port(worker.args, self.workers[0].port or worker.args.port)
        try:
            await worker.start()
        except TetherError as exc:
            log.error("gateway worker %d did not restart: %s", worker.args.index, exc.message)
            self.failed.set()
            return
        self._watch(worker)


def _with_port(args: WorkerArgs, port: int | None) -> WorkerArgs:
    return replace(args, port=port)


async def serve_workers(
    workers: GatewayWorkers | None,
    api: ApiLike | None,
    *,
    on_ready: Callable[[GatewayWorkers | None, ApiLike | None, int | None, int | None], None],
) -> None:
    """Run the workers and the API process until SIGINT/SIGTERM (or a worker keeps dying).

    The API starts after the gateway workers and stops before them, as in one process
    (:func:`tether.cloud.service.serve_until_signalled`).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    port = api_port = None
    try:
        if workers is not None:
            port = await workers.start()
        if api is not None:
            api_port = await api.start()
        on_ready(workers, api, port, api_port)
        waits = [asyncio.create_task(stop.wait())]
        if workers is not None:
            waits.append(asyncio.create_task(workers.failed.wait()))
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
    finally:
        if api is not None:
            await api.stop()
        if workers is not None:
            await workers.stop()
    if workers is not None and workers.failed.is_set():
        raise WorkerStartError(
            "a gateway worker kept exiting; the service stopped (see its log above)",
            code="worker_failed",
        )


class ApiLike(Protocol):
    """The API process as the supervisor uses it."""

    async def start(self) -> int:
        """Start; returns the bound port."""
        ...

    async def stop(self) -> None:
        """Stop."""
        ...
