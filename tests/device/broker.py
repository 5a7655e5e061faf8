"""A real Mosquitto broker (Debian's, a peer no one here wrote) with a mutual-TLS listener.

The broker is started on a free loopback port with a generated configuration: TLS with the
device CA as ``cafile``, a server certificate, ``require_certificate true`` and
``use_identity_as_username true``. ``stop()`` terminates it and waits, so no test leaks it.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 10.0


def free_port() -> int:
    """A port the kernel just handed out for 127.0.0.1 (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Broker:
    """A running mosquitto; ``log`` is its log file (for assertions and for debugging)."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_broker(
    directory: Path,
    *,
    client_ca: Path,
    server_cert: Path,
    server_key: Path,
    tls_version: str | None = None,
) -> Broker:
    """Start mosquitto in ``directory`` and wait until its TLS port accepts connections.

    ``tls_version`` is mosquitto's minimum TLS version for the listener (e.g. ``tlsv1.3``).
    """
    directory.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between probing and binding
        port = free_port()
        conf = directory / "mosquitto.conf"
        log = directory / "mosquitto.log"
        conf.write_text(
            "user root\n"  # the test may run as root; mosquitto would drop to a user that
            # cannot read the temporary key file
            "persistence false\n"
            f"log_dest file {log}\n"
            "log_type all\n"
            "allow_anonymous false\n"
            f"listener {port} 127.0.0.1\n"
            "protocol mqtt\n"
            f"cafile {client_ca}\n"
            f"certfile {server_cert}\n"
            f"keyfile {server_key}\n"
            "require_certificate true\n"
            "use_identity_as_username true\n"
            + (f"tls_version {tls_version}\n" if tls_version else "")
        )
        process = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        broker = Broker(process, port, log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                stderr = process.stderr.read() if process.stderr else b""
                last_error = stderr.decode(errors="replace")
                break
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return broker
            time.sleep(0.05)
        broker.stop()
        last_error = last_error or broker.log_text()
    raise RuntimeError(f"mosquitto did not start: {last_error}")
