"""A cloud data directory with many devices, and `tether cloud serve` as a real subprocess.

The load and crash tests need the gateway in its own process: its memory is then its own
(``/proc/<pid>/status``), it can be killed with SIGKILL, and the test's clients do not share
its GIL.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.cloud.conftest import ACTOR, CloudPKI
from tests.support.cli import cli_env, tether_command
from tether.cloud.registry import CARole, Provisioning, Registry
from tether.cloud.settings import CloudSettings
from tether.cloud.setup import init_data_dir
from tether.pki import generate_key, sha256_fingerprint
from tether.pki.store import pem

READY = re.compile(r"listening on [^:\s]+:(\d+)")
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Device:
    """A device identity on disk: serial, certificate file, key file, fingerprint."""

    serial: str
    cert_path: Path
    key_path: Path
    fingerprint: str


def make_data_dir(directory: Path, pki: CloudPKI) -> CloudSettings:
    """A cloud data directory with the device and service CAs registered."""
    settings = init_data_dir(
        directory / "data", server_ca=pki.server_ca, root_ca=pem(pki.root.certificate)
    )
    with Registry.open(settings.database_url) as registry:
        registry.register_ca(pki.device_ca.certificate, role=CARole.DEVICE, actor=ACTOR)
        registry.register_ca(pki.service_ca.certificate, role=CARole.SERVICE, actor=ACTOR)
    return settings


def write_key(path: Path, key: object) -> None:
    path.write_bytes(
        key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def issue_devices(
    settings: CloudSettings, pki: CloudPKI, directory: Path, serials: list[str]
) -> list[Device]:
    """Issue one certificate per serial from the device CA and register them all."""
    directory.mkdir(parents=True, exist_ok=True)
    issuer = sha256_fingerprint(pki.device_ca.certificate)
    devices = []
    with Registry.open(settings.database_url) as registry:
        for serial in serials:
            key = generate_key()
            certificate = pki.device_ca.issue_device_certificate_for_key(key.public_key(), serial)
            cert_path, key_path = directory / f"{serial}.crt", directory / f"{serial}.key"
            cert_path.write_bytes(pem(certificate))
            write_key(key_path, key)
            registry.add_device(serial, provisioning=Provisioning.CONSOLE, actor=ACTOR)
            registry.add_certificate(
                certificate, device_serial=serial, issuer_fingerprint=issuer, actor=ACTOR
            )
            devices.append(Device(serial, cert_path, key_path, sha256_fingerprint(certificate)))
    return devices


def issue_service(settings: CloudSettings, pki: CloudPKI, directory: Path, name: str) -> Device:
    """A registered service identity (may subscribe to ``devices/+/...``)."""
    key = generate_key()
    certificate = pki.service_ca.issue_service_certificate(key.public_key(), name=name)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(pem(certificate))
    write_key(key_path, key)
    with Registry.open(settings.database_url) as registry:
        registry.add_device(name, provisioning=Provisioning.CONSOLE, actor=ACTOR)
        registry.add_certificate(
            certificate,
            device_serial=name,
            issuer_fingerprint=sha256_fingerprint(pki.service_ca.certificate),
            actor=ACTOR,
        )
    return Device(name, cert_path, key_path, sha256_fingerprint(certificate))


class ServeProcess:
    """``tether cloud serve`` (any free ports) in a subprocess; ``port`` once it listens."""

    def __init__(self, data_dir: Path, log_path: Path, *, log_level: str = "WARNING") -> None:
        self.log_file = log_path.open("ab")
        self.process = subprocess.Popen(
            tether_command(
                "cloud",
                "serve",
                str(data_dir),
                "--port",
                "0",
                "--api-port",
                "0",
                "--metrics-port",
                "0",
                "--api-metrics-port",
                "0",
                "--publish-port",
                "0",
                "--log-level",
                log_level,
                # One process: the bounds under attack are per worker, and a worker per core
                # (plus a nats-server) takes several times longer to start on a loaded CI.
                "--workers",
                "1",
            ),
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            env=cli_env(),
        )
        self.port = self._wait_ready()

    def _wait_ready(self) -> int:
        found: list[int] = []
        seen: list[str] = []

        def read() -> None:
            assert self.process.stdout is not None
            for raw in self.process.stdout:
                line = raw.decode(errors="replace")
                seen.append(line)
                match = READY.search(line)
                if match:
                    found.append(int(match.group(1)))
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        if not found:
            self.kill()
            raise AssertionError(f"tether cloud serve did not start: {''.join(seen)!r}")
        return found[0]

    def status(self, field: str) -> int:
        """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``) in KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.process.pid}/status")

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (``/proc/<pid>/stat``)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, exactly like a crash."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.log_file.close()

    def stop(self) -> int:
        """SIGTERM and wait for a clean exit; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log_file.close()
        return self.process.returncode
