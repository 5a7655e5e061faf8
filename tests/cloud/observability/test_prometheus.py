"""Debian's Prometheus scrapes a real ``tether cloud serve`` and sees what the test did.

``tether cloud serve`` runs as a process (gateway in the main process, the admin API in its
child), each serving ``/metrics`` on its own loopback port. The test connects a known number
of good devices (kept connected) and refused ones (a revoked certificate, an unregistered
CA), makes one refused API call, lets Prometheus scrape every 0.5 s, and asks Prometheus's
HTTP API for the connected-devices and refusals-by-reason series. ``promtool check metrics``
checks both expositions.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from cryptography import x509
from mqtt5 import ConnAckReasonCode

from tests.attack.serve import Device, issue_devices, make_data_dir
from tests.cloud.conftest import ACTOR, CloudPKI
from tests.cloud.observability.scrape import get, promtool_check
from tests.support.cli import cli_env, tether_command
from tests.support.mqtt import RawClient
from tether.cloud.registry import Registry

GOOD = 3
TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _context(pki: CloudPKI, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=pki.root_path)
    context.load_cert_chain(cert, key)
    return context


class Serve:
    """``tether cloud serve`` with fixed metrics ports; its stdout lines are collected."""

    def __init__(self, data: Path, metrics_port: int, api_metrics_port: int, log: Path) -> None:
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [
                *tether_command(
                    "cloud", "serve", str(data), "--port", "0", "--api-port", "0", "--workers", "1"
                ),  # one process: its /metrics count every connection
                *("--metrics-port", str(metrics_port), "--api-metrics-port", str(api_metrics_port)),
                *("--publish-port", "0", "--log-level", "WARNING"),
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=cli_env(),
            text=True,
        )
        self.lines: list[str] = []
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def wait_for(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            for line in self.lines:
                found = re.search(pattern, line)
                if found:
                    return found
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"serve never printed {pattern!r}: {self.lines}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


class Prometheus:
    """Debian's ``prometheus`` scraping the given targets every 0.5 s, on loopback."""

    def __init__(self, directory: Path, targets: dict[str, int]) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus missing: run ./scripts/install-system-deps"
        directory.mkdir()
        jobs = [
            {
                "job_name": job,
                "scrape_interval": "500ms",
                "scrape_timeout": "400ms",
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
            }
            for job, port in targets.items()
        ]
        config = directory / "prometheus.yml"
        config.write_text(json.dumps({"global": {}, "scrape_configs": jobs}))  # JSON is YAML
        self.port = _free_port()
        self.log = (directory / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if get(self.port, "/-/ready")[0] == 200:
                    return
            assert self.process.poll() is None, (directory / "prometheus.log").read_text()
            time.sleep(0.2)
        raise AssertionError("prometheus did not become ready")

    def query(self, promql: str) -> list[dict[str, object]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        with urllib.request.urlopen(url, timeout=10) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def wait_for(self, promql: str, want: dict[tuple[tuple[str, str], ...], float]) -> None:
        """Poll ``promql`` until its series (selected labels -> value) are exactly ``want``."""
        deadline = time.monotonic() + TIMEOUT
        seen: dict[tuple[tuple[str, str], ...], float] = {}
        while time.monotonic() < deadline:
            seen = {}
            for series in self.query(promql):
                metric = series["metric"]
                assert isinstance(metric, dict)
                labels = tuple(sorted((k, v) for k, v in metric.items() if k in ("code", "result")))
                seen[labels] = float(series["value"][1])  # type: ignore[index]
            if seen == want:
                return
            time.sleep(0.25)
        raise AssertionError(f"{promql}: wanted {want}, Prometheus has {seen}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


@pytest.fixture
def running(cloud_pki: CloudPKI, tmp_path: Path) -> Iterator[tuple[Serve, list[Device]]]:
    settings = make_data_dir(tmp_path, cloud_pki)
    devices = issue_devices(
        settings, cloud_pki, tmp_path / "devices", [f"PROM-{n}" for n in range(GOOD + 1)]
    )
    with Registry.open(settings.database_url) as registry:
        registry.revoke_certificate(
            devices[-1].fingerprint, reason=x509.ReasonFlags.superseded, actor=ACTOR
        )
    serve = Serve(settings.data_dir, _free_port(), _free_port(), tmp_path / "serve.log")
    try:
        yield serve, devices
    finally:
        serve.stop()


def test_prometheus_scrapes_connections_and_refusals(
    running: tuple[Serve, list[Device]], cloud_pki: CloudPKI, tmp_path: Path
) -> None:
    serve, devices = running
    gateway = int(serve.wait_for(r"listening on 127\.0\.0\.1:(\d+)")[1])
    api = int(serve.wait_for(r"https://127\.0\.0\.1:(\d+)")[1])
    found = serve.wait_for(r"gateway http://127\.0\.0\.1:(\d+)/metrics .*:(\d+)/metrics")
    gateway_metrics, api_metrics = int(found[1]), int(found[2])
    prometheus = Prometheus(
        tmp_path / "prometheus", {"tether-gateway": gateway_metrics, "tether-api": api_metrics}
    )
    clients: list[RawClient] = []
    try:
        good, revoked = devices[:GOOD], devices[GOOD]
        for device in good:
            client = RawClient(gateway, _context(cloud_pki, device.cert_path, device.key_path))
            clients.append(client)
            assert client.connect(device.serial).reason_code == ConnAckReasonCode.SUCCESS
        for _ in range(2):
            refused = RawClient(gateway, _context(cloud_pki, revoked.cert_path, revoked.key_path))
            try:
                connack = refused.connect(revoked.serial)
                assert connack is not None and connack.reason_str == "certificate_revoked"
            finally:
                refused.close()
        stranger = cloud_pki.device("PROM-STRANGER", ca=cloud_pki.stranger_ca).write(
            tmp_path / "s", "PROM-STRANGER"
        )
        with contextlib.suppress(OSError):  # refused in TLS; may reach us as a reset
            alien = RawClient(gateway, _context(cloud_pki, stranger.cert_path, stranger.key_path))
            try:
                assert alien.connect("PROM-STRANGER") is None
            finally:
                alien.close()
        # One API call with a wrong token: a 401, counted under its route template.
        request = urllib.request.Request(
            f"https://127.0.0.1:{api}/api/v1/devices",
            headers={"Authorization": "Bearer tth_nobody.nothing"},
        )
        api_context = ssl.create_default_context(cafile=str(serve_data(running)))
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(request, context=api_context, timeout=10)  # noqa: S310

        prometheus.wait_for('tether_gateway_sessions{job="tether-gateway"}', {(): GOOD})
        prometheus.wait_for(
            'sum by (code) (tether_gateway_handshakes_total{result="refused"})',
            {(("code", "certificate_revoked"),): 2, (("code", "ca_not_registered"),): 1},
        )
        prometheus.wait_for(
            'tether_gateway_handshakes_total{result="accepted"}',
            {(("code", "mqtt_connected"), ("result", "accepted")): GOOD},
        )
        prometheus.wait_for(
            'sum by (code) (tether_api_requests_total{route="/api/v1/devices",status="401"})',
            {(): 1},
        )
        # The real process is ready: registry, feed, MQTT listener and the API's process.
        status, _, body = get(gateway_metrics, "/readyz")
        assert status == 200, body
        assert set(json.loads(body)["checks"]) == {"registry", "change_feed", "gateway", "api"}
        for port in (gateway_metrics, api_metrics):
            checked = promtool_check(get(port, "/metrics")[2])
            assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        for client in clients:
            client.close()
        prometheus.stop()


def serve_data(running: tuple[Serve, list[Device]]) -> Path:
    """The pinned CA of the served data directory (the API uses the gateway's certificate)."""
    args = running[0].process.args
    assert isinstance(args, list)
    return Path(args[args.index("serve") + 1]) / "pinned-ca.pem"
