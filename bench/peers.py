"""The servers under test and the load generator that drives them, started for real.

- Tether: ``tether cloud serve`` on a benchmark world (its log to a file, plain lines, INFO:
  one line per handshake step, as in production).
- Mosquitto: Debian's ``mosquitto`` with the same server certificate and key, trusting the same
  device CA, ``require_certificate true``, ``use_identity_as_username true``,
  ``set_tcp_nodelay true`` (Tether sets TCP_NODELAY too; without it Mosquitto's small writes
  wait out a 40 ms delayed ACK) and its default connection logging.
- The minimal TLS server: ``bench/tlsmin.c`` (the handshake and a fixed CONNACK, nothing
  else) with the same certificate, key and client CAs: the practical limit of the TLS stack.
- The load generator: ``bench/loadgen.c``, built here with the system compiler and OpenSSL.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import TETHER, process, process_tree, wait_for_port
from bench.world import World, free_port
from tether.cloud.settings import CloudSettings

LOADGEN_SOURCE = Path(__file__).with_name("loadgen.c")
TLSMIN_SOURCE = Path(__file__).with_name("tlsmin.c")
_STARTS = itertools.count(1)  # one log file per server start: worker_pids reads its own


@dataclass(frozen=True)
class Server:
    """A running server: its process id, port and log file."""

    name: str
    pid: int
    port: int
    log: Path


def build_loadgen(work: Path) -> Path:
    """Compile the load generator (gcc and libssl-dev come from scripts/system-packages.txt)."""
    return _build_c(LOADGEN_SOURCE, work / "loadgen")


def build_tlsmin(work: Path) -> Path:
    """Compile the minimal C TLS server, like the load generator."""
    return _build_c(TLSMIN_SOURCE, work / "tlsmin")


def _build_c(source: Path, binary: Path) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError(f"no C compiler (cc/gcc) to build {source.name}; install gcc")
    subprocess.run(
        [compiler, "-O2", "-pthread", "-o", str(binary), str(source), "-lssl", "-lcrypto"],
        check=True,
    )
    return binary


def run_loadgen(
    binary: Path, port: int, identities: Path, *, threads: int, duration: float
) -> dict:
    """One timed run of full handshakes + CONNECT/CONNACK; the generator's JSON result."""
    done = subprocess.run(
        [str(binary), "connect", "--port", str(port), "--identities", str(identities),
         "--threads", str(threads), "--duration", str(duration)],
        capture_output=True, text=True, check=True, timeout=duration + 60,
    )  # fmt: skip
    return json.loads(done.stdout)


@contextmanager
def tether_server(
    world: World,
    *,
    log_level: str = "INFO",
    workers: int = 1,
    role: str = "all",
    data_dir: Path | None = None,
) -> Iterator[Server]:
    """``tether cloud serve --workers N`` on the world's data directory, until the block ends.

    One worker (the default here) is the single process the older benchmarks measure; with
    more, ``pid`` is the supervisor: measure its whole tree (``tree_cpu_seconds``). ``role``
    and ``data_dir`` (another host's data directory on the world's registry) serve the
    several-host benchmarks; with ``role="api"`` the server's ``port`` is the API's. The
    metrics listeners take any free port, so two hosts on one machine do not collide.
    """
    settings = world.settings if data_dir is None else CloudSettings.load(data_dir)
    log = world.base / f"tether-serve-{settings.data_dir.name}-{role}-{next(_STARTS)}.log"
    api_port = free_port()
    command = [str(TETHER), "cloud", "serve", str(settings.data_dir),
               "--api-port", str(api_port), "--publish-port", "0",
               "--metrics-port", "0", "--api-metrics-port", "0",
               "--log-level", log_level, "--workers", str(workers), "--role", role]  # fmt: skip
    port = api_port if role == "api" else settings.gateway.port
    tree: set[int] = set()
    try:
        with process(command, log=log) as child:
            try:
                wait_for_port(port, child=child, timeout=120)
                yield Server("tether", child.pid, port, log)
            finally:
                tree = process_tree(child.pid) - {child.pid}
    finally:
        _stop_leftovers(tree, log)


def _stop_leftovers(pids: set[int], log: Path) -> None:
    """SIGKILL what a stopped ``serve`` left running (say, its nats-server, when the
    supervisor had to be killed); named on stderr, since a clean stop leaves nothing."""
    for pid in sorted(pids):
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # exited, not yet reaped
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            os.kill(pid, signal.SIGKILL)
        except (OSError, UnicodeDecodeError, IndexError):
            continue  # gone already, as it should be
        print(f"bench: killed a leftover of {log.name}: {pid} {command[:120]}", file=sys.stderr)


def worker_pids(server: Server, timeout: float = 60.0) -> list[int]:
    """The gateway worker processes of a ``tether cloud serve --workers N``.

    Read from its ready line (printed once every worker listens), waited for up to ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        text = server.log.read_text(errors="replace")
        lines = re.findall(r"workers, pids ([\d, ]+);", text)
        if lines:
            return [int(pid) for pid in lines[-1].split(",")]
        if time.monotonic() > deadline:
            raise RuntimeError(f"no worker pids in {server.log} within {timeout:g} s")
        time.sleep(0.1)


@contextmanager
def mosquitto_server(world: World, *, extra: tuple[str, ...] = ()) -> Iterator[Server]:
    """Debian Mosquitto configured like the gateway, until the block ends.

    ``extra``: more configuration lines a benchmark needs (e.g. a queue bound).
    """
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        raise RuntimeError("mosquitto is not installed; run scripts/install-system-deps")
    port = free_port()
    settings = world.settings
    lines = [
        "per_listener_settings false",
        "persistence false",
        "log_dest stdout",
        "max_connections -1",
        f"listener {port} 127.0.0.1",
        f"cafile {world.client_ca_file}",
        f"certfile {settings.server_chain}",
        f"keyfile {settings.server_key}",
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
        "set_tcp_nodelay true",
    ]
    lines += extra
    if os.geteuid() == 0:
        lines.insert(0, "user root")  # else it drops to 'mosquitto', who cannot read the key
    config = world.base / "mosquitto.conf"
    config.write_text("\n".join(lines) + "\n")
    log = world.base / "mosquitto.log"
    with process([mosquitto, "-c", str(config)], log=log) as child:
        wait_for_port(port, child=child)
        yield Server("mosquitto", child.pid, port, log)


@contextmanager
def tlsmin_server(world: World, binary: Path) -> Iterator[Server]:
    """``bench/tlsmin.c`` with the gateway's server chain and key and Mosquitto's client CAs."""
    settings = world.settings
    port = free_port()
    log = world.base / "tlsmin.log"
    command = [str(binary), "--port", str(port), "--cert", str(settings.server_chain),
               "--key", str(settings.server_key), "--ca", str(world.client_ca_file)]  # fmt: skip
    with process(command, log=log) as child:
        wait_for_port(port, child=child)
        yield Server("tlsmin", child.pid, port, log)


def mosquitto_version() -> str:
    done = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, check=False)
    match = re.search(r"mosquitto version (\S+)", done.stdout + done.stderr)
    return match.group(1) if match else "unknown"


def openssl_speed(seconds: int = 1) -> dict[str, float]:
    """ECDSA P-256 sign/s and verify/s and ECDH P-256 op/s on one core (``openssl speed``)."""
    done = subprocess.run(
        ["openssl", "speed", "-seconds", str(seconds), "ecdsap256", "ecdhp256"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    sign = verify = ecdh = None
    for line in done.stdout.splitlines():
        numbers = re.findall(r"[\d.]+", line.split(")", 1)[-1])
        if "ecdsa (nistp256)" in line and len(numbers) >= 4:
            sign, verify = float(numbers[2]), float(numbers[3])
        elif "ecdh (nistp256)" in line and len(numbers) >= 2:
            ecdh = float(numbers[1])
    if sign is None or verify is None or ecdh is None:
        raise RuntimeError(f"cannot read openssl speed output:\n{done.stdout}")
    return {"sign": sign, "verify": verify, "ecdh": ecdh}


def handshake_crypto_limit(speed: dict[str, float], cores: int) -> float:
    """Server-side mutual-TLS handshakes/s if the machine did nothing but their P-256 math.

    Per handshake the server signs once (CertificateVerify), makes one ephemeral key (a
    fixed-base multiplication, costed as a signature), verifies twice (the client
    certificate's signature and the client's CertificateVerify) and does one ECDH.
    """
    seconds = 2 / speed["sign"] + 2 / speed["verify"] + 1 / speed["ecdh"]
    return cores / seconds
