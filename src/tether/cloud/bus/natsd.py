"""A supervised local ``nats-server``: what ``tether cloud serve --workers N`` starts for itself.

With more than one worker and no ``nats_url`` in cloud.json, the workers need a bus and the
embedded default must still need no set-up: the service writes a config (loopback only, no
JetStream, no monitoring port, a small maximum payload matching the gateway's packet bound)
into its data directory's ``run/`` folder, starts Debian's ``nats-server`` on it, waits until
it accepts connections, and stops it with the service (SIGTERM, then SIGKILL after a bound).

It must also stop when the service is killed outright (``kill -9`` of ``serve`` and of every
worker at once), which no handler in those processes can see. ``PR_SET_PDEATHSIG`` did not
fire on this platform, so ``stop_with_parent`` starts a watcher beside it: a ``sh`` (no
interpreter to load) blocked reading a pipe whose only write end this process holds. The
kernel closes that end however the process ends; the read returns and the watcher SIGTERMs
the server if the pid still is a nats-server (pids are reused). A normal stop closes the pipe
after the server is gone, so the watcher finds nothing to do.
The same class runs the nodes of a test cluster (``routes``). Synchronous: it is called from
the supervisor, never from an event loop.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tether.errors import ConfigurationError

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
# The watcher of ``stop_with_parent``: $1 is the server's pid. It ignores SIGINT (Ctrl-C goes
# to the whole process group; the service stops the server in order) and waits for EOF.
_WATCH = (
    "trap '' INT; read -r _; "
    '[ "$(cat /proc/$1/comm 2>/dev/null)" = nats-server ] && kill -TERM "$1"; exit 0'
)


class NatsServerError(ConfigurationError):
    """nats-server is missing or did not start."""

    code = "nats_server_failed"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for a generated config)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class LocalNatsServer:
    """One ``nats-server`` process on loopback, from a generated config file."""

    def __init__(
        self,
        directory: Path,
        *,
        name: str = "tether",
        host: str = "127.0.0.1",
        port: int = 0,
        cluster_port: int | None = None,
        routes: tuple[int, ...] = (),
        max_payload: int = 1024 * 1024,
        stop_with_parent: bool = False,
    ) -> None:
        self.directory = directory
        self.name = name
        self.host = host
        self.port = port or free_port(host)
        self.cluster_port = cluster_port
        self.routes = routes
        self.max_payload = max_payload
        self.stop_with_parent = stop_with_parent
        self._process: subprocess.Popen[bytes] | None = None
        self._watcher: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``nats://host:port`` of this server."""
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def config(self) -> str:
        """The generated configuration (loopback, no JetStream, no HTTP monitoring)."""
        lines = [
            f'server_name: "{self.name}"',
            f'listen: "{self.host}:{self.port}"',
            f"max_payload: {self.max_payload}",
            "max_pending: 67108864",
            'write_deadline: "10s"',
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f'"nats-route://{self.host}:{p}"' for p in self.routes)
            lines += [
                "cluster {",
                '  name: "tether"',
                f'  listen: "{self.host}:{self.cluster_port}"',
                f"  routes: [{routes}]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> str:
        """Start the server and wait until it accepts connections; returns its URL."""
        binary = shutil.which("nats-server") or (
            "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
        )
        if binary is None:
            raise NatsServerError(
                "nats-server is not installed; run scripts/install-system-deps "
                "(Debian package nats-server) or set nats_url in cloud.json."
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / f"{self.name}.conf"
        conf.write_text(self.config())
        log = (self.directory / f"{self.name}.log").open("ab")
        self._process = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        if self.stop_with_parent:
            self._watcher = subprocess.Popen(
                ["sh", "-c", _WATCH, "tether-nats-watch", str(self._process.pid)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited at start (code {self._process.returncode}); see "
                    f"{self.directory / (self.name + '.log')}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self.url
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise NatsServerError(f"nats-server did not listen on {self.url} within {START_TIMEOUT} s")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a bound; idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        self._release_watcher()

    def _release_watcher(self) -> None:
        """Close the watcher's pipe (the server is already gone) and reap it."""
        watcher, self._watcher = self._watcher, None
        if watcher is None:
            return
        assert watcher.stdin is not None
        watcher.stdin.close()
        try:
            watcher.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            watcher.kill()
            watcher.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL at once (tests: a node dies mid-stream)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(STOP_TIMEOUT)
            self._process = None
        self._release_watcher()
