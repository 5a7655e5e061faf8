"""Crash safety: kill -9 the gateway and a registry writer mid-way; nothing acknowledged is lost.

1. `tether cloud serve` runs while a writer process issues and registers certificates in a
   loop, printing each one only after the registry committed it. Both get SIGKILL mid-way.
   After a restart every printed certificate is in the registry, serial numbers are unique per
   issuer, and the last printed device can connect.
2. A revocation acknowledged by `tether cloud revoke` (exit 0) drops the live session, and
   after a SIGKILL of the serve process and a restart the next handshake is refused.
"""

from __future__ import annotations

import queue
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import mqtt5
import pytest
from cryptography.hazmat.primitives import serialization

from tests.attack.report import SecurityReport
from tests.attack.serve import (
    ServeProcess,
    issue_devices,
    make_data_dir,
)
from tests.cloud.conftest import CloudPKI
from tests.support.cli import cli_env, tether_command
from tests.support.mqtt import KeyFiles, RawClient, tls_context
from tether.cloud.registry import Registry
from tether.errors import TetherError
from tether.pki import sha256_fingerprint

KILL_AFTER = 25  # certificates the writer reports before the SIGKILL


def all_serial_numbers(registry: Registry, issuer: str) -> list[str]:
    """Every certificate serial number the registry holds for ``issuer``."""
    serials: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = registry.list_certificates(issuer_fingerprint=issuer, offset=offset, limit=200)
        serials += [record.serial_number for record in page.items]
        offset = page.next_offset
    return serials


def connect(port: int, context: ssl.SSLContext, client_id: str) -> tuple[RawClient, object]:
    wire = RawClient(port, context)
    wire.send(mqtt5.ConnectPacket(client_id, clean_start=True))
    return wire, wire.recv()


def start_writer(tmp_path: Path, data_dir: Path, pki: CloudPKI) -> subprocess.Popen[bytes]:
    ca = pki.device_ca
    ca_cert, ca_key = tmp_path / "ca.crt", tmp_path / "ca.key"
    ca_cert.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    ca_key.write_bytes(
        ca.signer.private_key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ca_key.chmod(0o600)
    out = tmp_path / "issued"
    out.mkdir()
    args = [str(data_dir), str(ca_cert), str(ca_key), str(out), "CRASH-"]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.attack.scripts.issue_loop", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        cwd=Path(__file__).resolve().parents[2],
    )


def reported_lines(process: subprocess.Popen[bytes], count: int, timeout: float) -> list[str]:
    """The first ``count`` ISSUED lines (read in a thread so the wait is bounded)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            lines.put(raw.decode())

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        try:
            seen.append(lines.get(timeout=max(deadline - time.monotonic(), 0.01)))
        except queue.Empty:
            stderr = process.stderr.read().decode() if process.poll() is not None else ""
            raise AssertionError(
                f"the writer reported {len(seen)} certificates: {stderr}"
            ) from None
    # Whatever it managed to print between our count and the kill counts too.
    process.kill()
    process.wait(10)
    time.sleep(0.2)
    while not lines.empty():
        seen.append(lines.get())
    return [line for line in seen if line.startswith("ISSUED ")]


@pytest.mark.timeout(120)
def test_committed_certificates_survive_kill_9(
    cloud_pki: CloudPKI, tmp_path: Path, security_report: SecurityReport
) -> None:
    settings = make_data_dir(tmp_path, cloud_pki)
    serve = ServeProcess(settings.data_dir, tmp_path / "serve.log")
    writer = start_writer(tmp_path, settings.data_dir, cloud_pki)
    try:
        lines = reported_lines(writer, KILL_AFTER, timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(10)
        serve.kill()
    reported = [line.split()[1:3] for line in lines]
    restarted = ServeProcess(settings.data_dir, tmp_path / "serve.log")
    try:
        missing = []
        with Registry.open(settings.database_url) as registry:
            for _serial, fingerprint in reported:
                try:
                    registry.get_certificate(fingerprint)
                except TetherError:
                    missing.append(fingerprint)
            serials = all_serial_numbers(
                registry, sha256_fingerprint(cloud_pki.device_ca.certificate)
            )
        total = len(serials)
        duplicates = total - len(set(serials))
        last_serial = reported[-1][0]
        issued = tmp_path / "issued"
        wire, connack = connect(
            restarted.port,
            tls_context(
                cloud_pki.root_path,
                KeyFiles(issued / f"{last_serial}.crt", issued / f"{last_serial}.key"),
            ),
            last_serial,
        )
        wire.close()
    finally:
        restarted.stop()
    connected = isinstance(connack, mqtt5.ConnAckPacket) and connack.reason_code == 0
    security_report.record(
        "crash",
        "crash-registry-writes",
        "serve + a certificate writer, both SIGKILLed mid-way: every certificate reported as "
        "committed is in the registry after restart, serials unique, the last one connects",
        f"{len(reported)} reported before the kill, {len(missing)} missing, {total} in the "
        f"registry, {duplicates} duplicate serial numbers; last reported device "
        f"{'connects' if connected else 'does not connect'} after restart",
        passed=not missing and not duplicates and connected,
    )
    assert len(reported) >= KILL_AFTER
    assert missing == []
    assert duplicates == 0
    assert total >= len(reported)
    assert connected, connack


@pytest.mark.timeout(120)
def test_acknowledged_revocation_survives_kill_9(
    cloud_pki: CloudPKI, tmp_path: Path, security_report: SecurityReport
) -> None:
    settings = make_data_dir(tmp_path, cloud_pki)
    (device,) = issue_devices(settings, cloud_pki, tmp_path / "devices", ["REV-000001"])
    context = tls_context(cloud_pki.root_path, device)
    serve = ServeProcess(settings.data_dir, tmp_path / "serve.log")
    try:
        live, connack = connect(serve.port, context, device.serial)
        assert connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS  # type: ignore[attr-defined]
        revoke = subprocess.run(
            tether_command("cloud", "revoke", str(settings.data_dir), str(device.cert_path)),
            capture_output=True,
            text=True,
            timeout=60,
            env=cli_env(),
        )
        assert revoke.returncode == 0, revoke.stderr
        dropped = live.recv()
        live.close()
    finally:
        serve.kill()  # right after the acknowledgement: no clean shutdown
    restarted = ServeProcess(settings.data_dir, tmp_path / "serve.log")
    try:
        wire, after = connect(restarted.port, context, device.serial)
        wire.close()
    finally:
        restarted.stop()
    refused = (
        isinstance(after, mqtt5.ConnAckPacket)
        and after.reason_code == mqtt5.ConnAckReasonCode.BAD_USER_NAME_OR_PASSWORD
        and after.reason_str == "certificate_revoked"
    )
    was_dropped = isinstance(dropped, mqtt5.DisconnectPacket) and int(dropped.reason_code) == 0x98
    security_report.record(
        "crash",
        "crash-revocation",
        "`tether cloud revoke` returns 0 -> live session dropped; serve SIGKILLed and "
        "restarted -> next handshake refused (CONNACK 0x86 certificate_revoked)",
        f"revoke exit {revoke.returncode}; live session got "
        f"{type(dropped).__name__} 0x{int(getattr(dropped, 'reason_code', 0)):02x}; after "
        f"kill -9 + restart: {type(after).__name__} 0x{int(getattr(after, 'reason_code', 0)):02x}"
        f" ({getattr(after, 'reason_str', None)})",
        passed=refused and was_dropped,
    )
    assert was_dropped, dropped
    assert refused, after
