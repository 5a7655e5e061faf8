"""Abuse of the admin API cannot stall a device's connect or a revocation (issues 12 and 14).

Against a running ``tether cloud serve`` (a subprocess: its memory is its own), for a few
seconds, ``CONNECTIONS`` keep-alive HTTPS connections, each from its own loopback address
(127.0.0.2, 127.0.0.3, ...: every one gets a fresh per-address budget), send random
well-formed admin tokens as fast as the server answers; a quarter of them carry the real
admin's token id with random secrets, so they reach the scrypt lane. In the second case one
more client streams 256 MiB bodies without an Authorization header, over and over. While that
runs, asserted:

- a legitimate device connects (TCP + TLS + CONNECT -> CONNACK) within ``CONNECT_BOUND``,
  every time it tries (every ~0.25 s);
- a revocation drops a live session within ``DROP_BOUND``: once through the registry (as a
  ``tether cloud`` command does) and once through the API with the real admin token,
  measured from the commit (registry) or the API's answer to the drop reaching the device;
- the cloud's memory does not grow with the bodies (``VmHWM`` - ``VmRSS`` before).

Also here, as matrix rows: a cached admin token revoked with ``tether cloud admin revoke`` is
refused at the next request, and a burst of bad tokens from one address is throttled (429,
logged) while another address still authenticates.

The abusers run in a process of their own, so their CPU and GIL do not slow the test's probe
(the cloud and the abusers still share the machine's cores, as they would on one host). The
loops are bounded in count and time; every socket has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import re
import secrets
import ssl
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import mqtt5
import pytest
from cryptography import x509

from tests.attack.report import SecurityReport
from tests.attack.serve import (
    Device,
    ServeProcess,
    issue_devices,
    make_data_dir,
)
from tests.cloud.conftest import CloudPKI
from tests.support.cli import cli_env, tether_command
from tests.support.mqtt import RawClient, tls_context
from tether.cloud.admin import create_admin
from tether.cloud.registry import Registry
from tether.cloud.settings import CloudSettings

CONNECTIONS = 120
DURATION = 4.0
CONNECT_BOUND = 1.0  # seconds, a device's connect while the API is abused
DROP_BOUND = 0.1  # seconds, a revocation's drop of a live session
RSS_GROWTH_BOUND_KIB = 64 * 1024
HUGE = 256 * 1024 * 1024
IO_TIMEOUT = 10.0
SPAWN_GRACE = 3.0  # seconds for the abuse process to start before the abuse begins
API_READY = re.compile(r"https://[^:\s]+:(\d+) .*pid (\d+)")


class ApiServeProcess(ServeProcess):
    """``tether cloud serve`` that also reports the admin API's port and process."""

    api_port: int
    api_pid: int

    def _wait_ready(self) -> int:
        found: dict[str, int] = {}
        seen: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.process.stdout is not None
            for raw in self.process.stdout:
                line = raw.decode(errors="replace")
                seen.append(line)
                if (match := re.search(r"listening on [^:\s]+:(\d+)", line)) is not None:
                    found["gateway"] = int(match.group(1))
                if (match := API_READY.search(line)) is not None:
                    found["api"] = int(match.group(1))
                    found["api_pid"] = int(match.group(2))
                if len(found) == 3:
                    ready.set()
                    return

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(30):
            self.kill()
            raise AssertionError(f"tether cloud serve did not start: {''.join(seen)!r}")
        self.api_port = found["api"]
        self.api_pid = found["api_pid"]
        return found["gateway"]

    def api_status(self, name: str) -> int:
        """A ``/proc/<api pid>/status`` memory field of the API process, in KiB."""
        for line in Path(f"/proc/{self.api_pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {name} in /proc/{self.api_pid}/status")


@dataclass
class Abuse:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    body_attempts: int = 0
    body_bytes_sent: int = 0
    body_statuses: Counter[int] = field(default_factory=Counter)


def _api_context(root: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(root))


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), IO_TIMEOUT)
    return int(lines[0].split()[1]), headers.get("connection", "").lower() == "close"


async def _token_abuser(
    port: int, root: Path, address: str, token_id: str | None, deadline: float, abuse: Abuse
) -> None:
    """One keep-alive connection sending random well-formed tokens until the deadline."""
    context = _api_context(root)
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    "127.0.0.1",
                    port,
                    ssl=context,
                    server_hostname="127.0.0.1",
                    local_addr=(address, 0),
                ),
                IO_TIMEOUT,
            )
        except (OSError, TimeoutError):
            abuse.errors += 1
            await asyncio.sleep(0.1)
            continue
        try:
            while time.monotonic() < deadline:
                token = f"tether_{token_id or secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
                writer.write(
                    f"GET /api/v1/whoami HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Bearer {token}\r\n\r\n".encode()
                )
                await writer.drain()
                status, close = await _read_response(reader)
                abuse.statuses[status] += 1
                if close:
                    break
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            abuse.errors += 1
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)


async def _body_streamer(port: int, root: Path, deadline: float, abuse: Abuse) -> None:
    """256 MiB bodies without Authorization, declared and chunked by turns, until the deadline."""
    context = _api_context(root)
    piece = b"x" * 65536
    while time.monotonic() < deadline:
        chunked = abuse.body_attempts % 2 == 1
        abuse.body_attempts += 1
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {HUGE}"
        frame = b"10000\r\n" + piece + b"\r\n" if chunked else piece
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
                ),
                IO_TIMEOUT,
            )
        except (OSError, TimeoutError):
            abuse.errors += 1
            await asyncio.sleep(0.1)
            continue
        answer = asyncio.ensure_future(_read_response(reader))
        try:
            writer.write(
                f"POST /api/v1/devices HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\n{framing}\r\n\r\n".encode()
            )
            sent = 0
            while not answer.done() and sent < HUGE and time.monotonic() < deadline:
                writer.write(frame)
                await writer.drain()
                sent += len(piece)
            abuse.body_bytes_sent += sent
            status, _ = await asyncio.wait_for(answer, IO_TIMEOUT)
            abuse.body_statuses[status] += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            abuse.errors += 1
        finally:
            answer.cancel()
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)


def run_abuse(port: int, root: Path, token_id: str, start_at: float, with_body: bool) -> Abuse:
    """The abuse, from ``start_at`` (``time.monotonic``, the same clock in every process) for
    ``DURATION`` seconds. Runs in its own process, so its CPU and GIL are not the test's."""
    abuse = Abuse()

    async def main() -> None:
        await asyncio.sleep(max(start_at - time.monotonic(), 0.0))
        deadline = start_at + DURATION
        tasks = [
            _token_abuser(
                port, root, f"127.0.0.{2 + i}", token_id if i % 4 == 0 else None, deadline, abuse
            )
            for i in range(CONNECTIONS)
        ]
        if with_body:
            tasks.append(_body_streamer(port, root, deadline, abuse))
        await asyncio.gather(*tasks)

    asyncio.run(main())
    return abuse


def _connect(port: int, context: ssl.SSLContext, client_id: str) -> tuple[RawClient, float]:
    """A device connect: TCP + TLS + CONNECT -> successful CONNACK; (wire, seconds)."""
    started = time.monotonic()
    wire = RawClient(port, context, timeout=IO_TIMEOUT)
    wire.send(mqtt5.ConnectPacket(client_id, clean_start=True))
    connack = wire.recv(IO_TIMEOUT)
    elapsed = time.monotonic() - started
    assert isinstance(connack, mqtt5.ConnAckPacket), connack
    assert connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS, connack
    return wire, elapsed


def _probe(port: int, context: ssl.SSLContext, serial: str, until: float) -> list[float]:
    latencies: list[float] = []
    while time.monotonic() < until and len(latencies) < 100:
        wire, elapsed = _connect(port, context, serial)
        latencies.append(elapsed)
        with contextlib.suppress(OSError):
            wire.send(mqtt5.DisconnectPacket())
        wire.close()
        time.sleep(0.25)
    return latencies


class Victim:
    """A live session and the moment the gateway's drop reached it."""

    def __init__(self, port: int, device: Device, root: Path) -> None:
        self.device = device
        self.wire, _ = _connect(port, tls_context(root, device), device.serial)
        self.dropped_at: float | None = None
        self.packet: object = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        self.packet = self.wire.recv(DURATION * 6)
        self.dropped_at = time.monotonic()

    def wait(self) -> None:
        self._reader.join(IO_TIMEOUT)
        self.wire.close()


def _scenario(
    cloud_pki: CloudPKI, tmp_path: Path, *, with_body: bool
) -> tuple[dict[str, object], Abuse]:
    settings: CloudSettings = make_data_dir(tmp_path, cloud_pki)
    devices = issue_devices(
        settings, cloud_pki, tmp_path / "devices", ["ABUSE-PROBE", "ABUSE-REG", "ABUSE-API"]
    )
    probe, by_registry, by_api = devices
    root = cloud_pki.root_path
    with Registry.open(settings.database_url) as registry:
        token = create_admin(registry, "ops", actor="test:abuse").token
    serve = ApiServeProcess(settings.data_dir, tmp_path / "serve.log")
    http = httpx.Client(
        base_url=f"https://127.0.0.1:{serve.api_port}",
        verify=_api_context(root),
        headers={"Authorization": f"Bearer {token}"},
        timeout=IO_TIMEOUT,
    )
    try:
        assert http.get("/api/v1/whoami").status_code == 200  # verified once, then cached
        victims = [Victim(serve.port, d, root) for d in (by_registry, by_api)]
        _, quiet = _connect(serve.port, tls_context(root, probe), probe.serial)
        rss_before = serve.status("VmRSS"), serve.api_status("VmRSS")
        start_at = time.monotonic() + SPAWN_GRACE
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            abusing = pool.submit(
                run_abuse, serve.api_port, root, token.split("_")[1], start_at, with_body
            )
            time.sleep(max(start_at - time.monotonic(), 0.0))
            probing: list[float] = []
            prober = threading.Thread(
                target=lambda: probing.extend(
                    _probe(
                        serve.port,
                        tls_context(root, probe),
                        probe.serial,
                        start_at + DURATION,
                    )
                ),
                daemon=True,
            )
            prober.start()
            time.sleep(DURATION / 3)
            with Registry.open(settings.database_url) as registry:
                registry.revoke_certificate(
                    by_registry.fingerprint,
                    reason=x509.ReasonFlags.key_compromise,
                    actor="test:abuse",
                )
                committed = time.monotonic()
            time.sleep(DURATION / 3)
            sent = time.monotonic()
            revoked = http.post(
                f"/api/v1/certificates/{by_api.fingerprint}/revoke",
                json={"reason": "key_compromise"},
            )
            answered = time.monotonic()
            assert revoked.status_code == 200, revoked.text
            abuse = abusing.result(DURATION + 60)
            prober.join(IO_TIMEOUT)
        for victim in victims:
            victim.wait()
        peak = serve.status("VmHWM"), serve.api_status("VmHWM")
        limits = http.get("/api/v1/limits").json()
        alive = serve.process.poll() is None
    finally:
        http.close()
        serve.stop()
    registry_victim, api_victim = victims
    assert registry_victim.dropped_at is not None and api_victim.dropped_at is not None
    return {
        "quiet_connect": quiet,
        "connects": probing,
        "registry_drop": registry_victim.dropped_at - committed,
        "api_drop": max(api_victim.dropped_at - answered, 0.0),
        "api_request_to_drop": api_victim.dropped_at - sent,
        "drop_packets": [registry_victim.packet, api_victim.packet],
        "rss_growth": max(peak[0] - rss_before[0], peak[1] - rss_before[1]),
        "limits": limits,
        "alive": alive,
        "log": (tmp_path / "serve.log").read_text(errors="replace"),
    }, abuse


@pytest.mark.timeout(180)
@pytest.mark.parametrize("with_body", [False, True], ids=["tokens", "tokens-and-huge-body"])
def test_api_abuse_does_not_stall_connects_or_revocation(
    cloud_pki: CloudPKI, tmp_path: Path, security_report: SecurityReport, with_body: bool
) -> None:
    seen, abuse = _scenario(cloud_pki, tmp_path, with_body=with_body)
    connects: list[float] = seen["connects"]  # type: ignore[assignment]
    limits: dict[str, dict[str, int]] = seen["limits"]  # type: ignore[assignment]
    acted = {k: v for k, v in limits["acted"].items() if v}
    worst_connect = max(connects) if connects else float("inf")
    drops = [p for p in seen["drop_packets"] if isinstance(p, mqtt5.DisconnectPacket)]  # type: ignore[attr-defined]
    requests = sum(abuse.statuses.values())
    observation = (
        f"{CONNECTIONS} connections from {CONNECTIONS} addresses, {DURATION:.0f} s: "
        f"{requests} token requests answered {dict(sorted(abuse.statuses.items()))}, "
        f"{abuse.errors} client errors"
        + (
            f"; {abuse.body_attempts} huge bodies, {abuse.body_bytes_sent // 1024} KiB sent in "
            f"all, answered {dict(abuse.body_statuses)}"
            if with_body
            else ""
        )
        + f"; scrypt runs {limits['kdf_runs']}, limits acted {acted}; device connect quiet "
        f"{seen['quiet_connect'] * 1000:.0f} ms, under abuse max {worst_connect * 1000:.0f} ms "
        f"over {len(connects)} connects; revocation drop {seen['registry_drop'] * 1000:.0f} ms "
        f"(registry), {seen['api_drop'] * 1000:.0f} ms after the API's answer "
        f"({seen['api_request_to_drop'] * 1000:.0f} ms after the request); cloud memory "
        f"+{seen['rss_growth'] // 1024} MiB (peak over start)"  # type: ignore[operator]
    )
    passed = (
        bool(seen["alive"])
        and worst_connect < CONNECT_BOUND
        and seen["registry_drop"] < DROP_BOUND  # type: ignore[operator]
        and seen["api_drop"] < DROP_BOUND  # type: ignore[operator]
        and len(drops) == 2
        and seen["rss_growth"] < RSS_GROWTH_BOUND_KIB  # type: ignore[operator]
    )
    security_report.record(
        "abuse",
        "abuse-api-tokens-and-body" if with_body else "abuse-api-tokens",
        f"{CONNECTIONS} keep-alive HTTPS connections send random well-formed admin tokens"
        + (" and one client streams 256 MiB bodies without Authorization" if with_body else "")
        + f": a device still connects within {CONNECT_BOUND:.0f} s, a revocation (registry and "
        f"API) drops a live session within {DROP_BOUND * 1000:.0f} ms, memory stays bounded",
        observation,
        passed=passed,
    )
    assert seen["alive"], "the cloud process died under abuse"
    assert requests > CONNECTIONS, observation  # the abuse really ran
    assert len(connects) >= 3, observation
    assert worst_connect < CONNECT_BOUND, observation
    assert len(drops) == 2 and all(int(p.reason_code) == 0x98 for p in drops), observation
    assert seen["registry_drop"] < DROP_BOUND, observation  # type: ignore[operator]
    assert seen["api_drop"] < DROP_BOUND, observation  # type: ignore[operator]
    assert seen["rss_growth"] < RSS_GROWTH_BOUND_KIB, observation  # type: ignore[operator]
    # The bounds acted, and said so with their reason codes.
    assert limits["acted"]["api_credential_invalid"] > 0, observation
    assert "api_auth_throttled" in str(seen["log"]) or "api_rate_limited" in str(seen["log"])
    if with_body:
        assert abuse.body_attempts >= 2 and set(abuse.body_statuses) <= {401, 413}, observation
        assert abuse.body_bytes_sent < abuse.body_attempts * 16 * 1024 * 1024, observation


@pytest.mark.timeout(120)
def test_revoked_admin_tokens_and_a_brute_force_burst_are_refused(
    cloud_pki: CloudPKI, tmp_path: Path, security_report: SecurityReport
) -> None:
    settings = make_data_dir(tmp_path, cloud_pki)
    with Registry.open(settings.database_url) as registry:
        ops = create_admin(registry, "ops", actor="test:abuse").token
        backup = create_admin(registry, "backup", actor="test:abuse").token
    serve = ApiServeProcess(settings.data_dir, tmp_path / "serve.log")
    base = f"https://127.0.0.1:{serve.api_port}"
    context = _api_context(cloud_pki.root_path)

    def whoami(token: str, address: str = "127.0.0.1") -> httpx.Response:
        transport = httpx.HTTPTransport(verify=context, local_address=address)
        with httpx.Client(base_url=base, transport=transport, timeout=IO_TIMEOUT) as client:
            return client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})

    try:
        assert whoami(ops).status_code == 200 and whoami(backup).status_code == 200
        revoked = subprocess.run(
            tether_command("cloud", "admin", "revoke", str(settings.data_dir), "ops"),
            capture_output=True,
            text=True,
            timeout=60,
            env=cli_env(),
        )
        assert revoked.returncode == 0, revoked.stderr
        after_revoke = whoami(ops)
        burst = [whoami(f"tether_{backup.split('_')[1]}_{secrets.token_urlsafe(32)}", "127.0.0.9")]
        burst += [
            whoami(f"tether_{secrets.token_hex(8)}_{'D' * 43}", "127.0.0.9") for _ in range(11)
        ]
        elsewhere = whoami(backup, "127.0.0.10")
    finally:
        serve.stop()
    log = (tmp_path / "serve.log").read_text(errors="replace")
    codes = [r.status_code for r in burst]
    revoked_ok = after_revoke.status_code == 401
    throttled_ok = codes[:10] == [401] * 10 and codes[10:] == [429, 429]
    throttled_ok = throttled_ok and burst[-1].json()["code"] == "api_auth_throttled"
    throttled_ok = throttled_ok and "api_auth_throttled" in log and elsewhere.status_code == 200
    security_report.record(
        "matrix",
        "admin-token-revoked",
        "a cached admin token revoked by `tether cloud admin revoke` while the API runs: the "
        "next request is refused (401 admin_credential_invalid)",
        f"next request {after_revoke.status_code} {after_revoke.json().get('code')}",
        passed=revoked_ok,
    )
    security_report.record(
        "matrix",
        "admin-token-brute-force",
        "12 bad tokens from one address: 10 answered 401, then 429 `api_auth_throttled` with "
        "Retry-After, logged; another address still authenticates",
        f"statuses {codes}; Retry-After {burst[-1].headers.get('Retry-After')}; other address "
        f"{elsewhere.status_code}",
        passed=throttled_ok,
    )
    assert revoked_ok, after_revoke.text
    assert throttled_ok, (codes, log[-2000:])
