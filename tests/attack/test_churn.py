"""Load with churn: many devices connect, publish and reconnect against `tether cloud serve`.

Each device has its own certificate (issued from one device CA, registered in bulk). The
gateway runs as a subprocess; the devices, a probe and a service subscriber are plain asyncio +
ssl clients here. Asserted: the gateway stays responsive (the probe's CONNECT -> CONNACK
latency stays bounded), its memory stays bounded (/proc/<pid>/status VmHWM), and no message is
attributed to the wrong identity (each device publishes its own serial; the service checks
the gateway's ``tether-sender`` against the payload). CI: 100 sessions for ~10 s;
``TETHER_FULL_LOAD=1``: 2,000 sessions for 60 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import mqtt5
import pytest

from tests.attack.report import SecurityReport
from tests.attack.serve import Device, ServeProcess, issue_devices, issue_service, make_data_dir
from tests.cloud.conftest import CloudPKI
from tests.support.mqtt import AsyncRawClient, tls_context

FULL = os.environ.get("TETHER_FULL_LOAD") == "1"
SESSIONS = 2000 if FULL else 100
DURATION = 60.0 if FULL else 10.0
PROBE_BOUND = 5.0  # seconds, CONNECT -> CONNACK for the probe at any time of the run
RSS_BOUND_KIB = (1024 if FULL else 384) * 1024  # the gateway process's peak resident memory
IO_TIMEOUT = 15.0
SERVICE = "churn-watcher"


@dataclass
class Stats:
    connects: int = 0
    publishes: int = 0
    failures: int = 0
    received: int = 0
    misattributed: list[str] = field(default_factory=list)
    probe: list[float] = field(default_factory=list)


async def connect(port: int, context: ssl.SSLContext, client_id: str) -> AsyncRawClient:
    connection = await AsyncRawClient.open(port, context, IO_TIMEOUT)
    await connection.send(mqtt5.ConnectPacket(client_id, clean_start=True))
    connack = await connection.recv()
    assert isinstance(connack, mqtt5.ConnAckPacket), connack
    assert connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS, connack
    return connection


async def device_loop(
    device: Device, context: ssl.SSLContext, port: int, deadline: float, stats: Stats
) -> None:
    """Connect, publish own serial at QoS 1, disconnect; again until the deadline."""
    packet_id = 0
    while time.monotonic() < deadline:
        try:
            connection = await connect(port, context, device.serial)
            stats.connects += 1
            for _ in range(2):
                packet_id = packet_id % 65535 + 1
                await connection.send(
                    mqtt5.PublishPacket(
                        f"devices/{device.serial}/telemetry",
                        device.serial.encode(),
                        qos=mqtt5.QoS.AT_LEAST_ONCE,
                        packet_id=packet_id,
                    )
                )
                ack = await connection.recv()
                assert isinstance(ack, mqtt5.PubAckPacket) and int(ack.reason_code) < 0x80, ack
                stats.publishes += 1
            await connection.send(mqtt5.DisconnectPacket())
            await connection.close()
        except (OSError, ConnectionError, TimeoutError, ssl.SSLError, AssertionError):
            stats.failures += 1
            await asyncio.sleep(0.1)


async def watch(connection: AsyncRawClient, stats: Stats) -> None:
    """The service subscriber: every message's tether-sender must equal its payload."""
    while True:
        packet = await connection.recv()
        if isinstance(packet, mqtt5.PublishPacket):
            stats.received += 1
            senders = [v for k, v in packet.user_properties if k == "tether-sender"]
            if senders != [packet.payload.decode()]:
                stats.misattributed.append(f"{senders} sent {packet.payload!r}")


async def probe_loop(
    probe: Device, context: ssl.SSLContext, port: int, deadline: float, stats: Stats
) -> None:
    """Every 0.5 s: TLS, then time CONNECT -> CONNACK."""
    while time.monotonic() < deadline:
        connection = await AsyncRawClient.open(port, context, IO_TIMEOUT)
        started = time.monotonic()
        await connection.send(mqtt5.ConnectPacket(probe.serial, clean_start=True))
        connack = await connection.recv()
        stats.probe.append(time.monotonic() - started)
        assert isinstance(connack, mqtt5.ConnAckPacket)
        assert connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS
        await connection.send(mqtt5.DisconnectPacket())
        await connection.close()
        await asyncio.sleep(0.5)


async def run_load(
    devices: list[Device], probe: Device, service: Device, port: int, root: Path
) -> Stats:
    stats = Stats()
    contexts = [tls_context(root, device) for device in devices]
    watcher = await connect(port, tls_context(root, service), service.serial)
    await watcher.send(
        mqtt5.SubscribePacket(
            1, [mqtt5.TopicFilter("devices/+/telemetry", max_qos=mqtt5.QoS.AT_MOST_ONCE)]
        )
    )
    assert isinstance(await watcher.recv(), mqtt5.SubAckPacket)
    watching = asyncio.create_task(watch(watcher, stats))
    deadline = time.monotonic() + DURATION
    try:
        await asyncio.gather(
            probe_loop(probe, tls_context(root, probe), port, deadline, stats),
            *(
                device_loop(d, c, port, deadline, stats)
                for d, c in zip(devices, contexts, strict=True)
            ),
        )
        await asyncio.sleep(0.5)  # let the last deliveries arrive
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watching
        await watcher.close()
    return stats


@pytest.mark.timeout(300 if FULL else 120)
def test_gateway_stays_responsive_under_churn(
    cloud_pki: CloudPKI, tmp_path: Path, security_report: SecurityReport
) -> None:
    settings = make_data_dir(tmp_path, cloud_pki)
    started = time.monotonic()
    serials = [f"LOAD-{i:06d}" for i in range(SESSIONS + 1)]
    devices = issue_devices(settings, cloud_pki, tmp_path / "devices", serials)
    service = issue_service(settings, cloud_pki, tmp_path / "devices", SERVICE)
    provisioning = time.monotonic() - started
    serve = ServeProcess(settings.data_dir, tmp_path / "serve.log")
    try:
        baseline = serve.status("VmRSS")
        cpu_before = serve.cpu_seconds()
        stats = asyncio.run(
            run_load(devices[1:], devices[0], service, serve.port, cloud_pki.root_path)
        )
        peak = serve.status("VmHWM")
        cpu = serve.cpu_seconds() - cpu_before
        alive = serve.process.poll() is None
    finally:
        serve.stop()
    p50 = statistics.median(stats.probe)
    worst = max(stats.probe)
    observation = (
        f"{SESSIONS} devices ({provisioning:.0f} s to issue + register), {DURATION:.0f} s: "
        f"{stats.connects} sessions, {stats.publishes} QoS 1 publishes, {stats.failures} "
        f"client failures; probe CONNECT->CONNACK p50 {p50 * 1000:.0f} ms, max "
        f"{worst * 1000:.0f} ms (clients and gateway share the machine's cores; the gateway "
        f"used {cpu:.0f} s of CPU in {DURATION:.0f} s); gateway RSS {baseline // 1024} -> "
        f"peak {peak // 1024} MiB; "
        f"{stats.received} messages seen by the service, {len(stats.misattributed)} misattributed"
    )
    passed = (
        alive
        and worst < PROBE_BOUND
        and peak < RSS_BOUND_KIB
        and not stats.misattributed
        and stats.received > 0
        and stats.connects >= SESSIONS
    )
    security_report.record(
        "churn",
        "churn-full" if FULL else "churn-ci",
        f"{SESSIONS} sessions connect/publish/reconnect for {DURATION:.0f} s: probe latency < "
        f"{PROBE_BOUND:.0f} s, gateway peak RSS < {RSS_BOUND_KIB // 1024} MiB, every message "
        "attributed to its sender",
        observation,
        passed=passed,
    )
    assert alive, "the gateway process died under load"
    assert not stats.misattributed, stats.misattributed[:5]
    assert stats.received > 0
    assert worst < PROBE_BOUND, observation
    assert peak < RSS_BOUND_KIB, observation
    assert stats.connects >= SESSIONS, observation
