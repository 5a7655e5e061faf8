"""The console's fleet overview in a real headless chromium, over a real gateway's metrics.

The API app reads the gateway's ``/metrics`` (served by ``GatewayEndpoints`` on loopback), as
``tether cloud serve`` wires it. The first view takes the window's first sample; refusals made
after it show in the chart on the next view, by reason, with exact counts. The run writes a
screenshot of the overview.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from cryptography import x509
from mqtt5 import ConnAckReasonCode

from tests.cloud.conftest import ACTOR, Cloud
from tests.support.browser import chromium, find, wait_text
from tests.support.mqtt import RawClient
from tether.cloud.admin import create_admin
from tether.cloud.api import ApiServer, create_app
from tether.cloud.observability.endpoints import GatewayEndpoints
from tether.cloud.observability.overview import RefusalHistory, read_gateway_metrics, readable
from tether.cloud.registry import Provisioning
from tether.pki import generate_key, sha256_fingerprint


@pytest.fixture
def console(cloud: Cloud) -> Iterator[tuple[int, str]]:
    endpoints = GatewayEndpoints(cloud.service, host="127.0.0.1", port=0, feed_max_lag=5.0)
    metrics_port = cloud.running.call(endpoints.start())
    token = create_admin(cloud.registry, "overseer", actor="test:setup").token
    server = ApiServer(
        create_app(
            cloud.registry,
            root_certificate=cloud.pki.root.certificate,
            gateway_metrics=partial(read_gateway_metrics, "127.0.0.1", metrics_port),
        ),
        host="127.0.0.1",
        port=0,
        certificate_chain=cloud.settings.server_chain,
        private_key=cloud.settings.server_key,
    )
    port = cloud.running.call(server.start())
    try:
        yield port, token
    finally:
        cloud.running.call(server.stop(), timeout=15)
        cloud.running.call(endpoints.stop())


def _refuse(cloud: Cloud, identity: object, serial: str) -> None:
    with contextlib.suppress(OSError):  # a TLS refusal may reach the client as a reset
        client = RawClient(cloud.port, cloud.tls_context(identity))  # type: ignore[arg-type]
        try:
            client.connect(serial)
        finally:
            client.close()


def test_overview_counts_chart_and_expiring(
    cloud: Cloud, console: tuple[int, str], tmp_path: Path
) -> None:
    port, token = console
    connected = [cloud.console_device(f"OV-{n}") for n in range(2)]
    revoked = cloud.console_device("OV-REVOKED")
    cloud.registry.revoke_certificate(
        sha256_fingerprint(revoked.certificate), reason=x509.ReasonFlags.superseded, actor=ACTOR
    )
    soon = cloud.pki.device_ca.issue_device_certificate_for_key(
        generate_key().public_key(), "OV-SOON", validity=dt.timedelta(days=12)
    )
    cloud.registry.add_device("OV-SOON", provisioning=Provisioning.CONSOLE, actor=ACTOR)
    cloud.registry.add_certificate(
        soon,
        device_serial="OV-SOON",
        issuer_fingerprint=sha256_fingerprint(cloud.pki.device_ca.certificate),
        actor=ACTOR,
    )
    stranger = cloud.pki.device("OV-STRANGER", ca=cloud.pki.stranger_ca).write(
        tmp_path / "s", "OV-STRANGER"
    )
    _refuse(cloud, revoked, "OV-REVOKED")  # before the window's first sample: not counted

    base = f"https://127.0.0.1:{port}"
    clients = []
    with chromium() as browser:
        browser.get(f"{base}/console/login")
        find(browser, "#token").send_keys(token)
        find(browser, "#sign-in").click()
        wait_text(browser, "#admin-name", "overseer")
        browser.get(f"{base}/console/overview")  # the window's first sample
        assert "no refused handshakes" in find(browser, "#refusals-chart").text
        try:
            for n, identity in enumerate(connected):
                client = RawClient(cloud.port, cloud.tls_context(identity))
                clients.append(client)
                assert client.connect(f"OV-{n}").reason_code == ConnAckReasonCode.SUCCESS
            for _ in range(3):
                _refuse(cloud, revoked, "OV-REVOKED")
            _refuse(cloud, stranger, "OV-STRANGER")

            browser.get(f"{base}/console/overview")
            wait_text(browser, "#connected", "2")
            source = browser.page_source
            assert 'data-code="certificate_revoked" data-count="3"' in source
            assert 'data-code="ca_not_registered" data-count="1"' in source
            assert find(browser, "#device-counts").text.split()[:4] == [
                "devices",
                "enabled",
                "4",
                "disabled",
            ]
            assert "active 3 inactive 0 revoked 1" in " ".join(
                find(browser, "#certificate-counts").text.split()
            )
            expiring = find(browser, "#expiring").text
            assert ("OV-SOON" in expiring and "in 11 days" in expiring) or "in 12 days" in expiring
            shot = browser.get_screenshot_as_png()
            (tmp_path / "console-overview.png").write_bytes(shot)
            assert shot.startswith(b"\x89PNG")

            # The hygiene page runs the same audit as `tether audit` (no live view here).
            browser.get(f"{base}/console/hygiene")
            findings = find(browser, "#findings").text
            assert "certificate_expiring" in findings and "OV-SOON" in findings
            assert "skipped" in find(browser, "main").text
        finally:
            for client in clients:
                client.close()


def test_the_window_restarts_with_a_restarted_gateway() -> None:
    from collections import Counter

    now = [0.0]
    history = RefusalHistory(clock=lambda: now[0])
    assert history.add(Counter(certificate_revoked=5))[0] == Counter()
    now[0] = 120.0
    assert history.add(Counter(certificate_revoked=8))[0] == Counter(certificate_revoked=3)
    now[0] = 240.0  # the gateway restarted: its counters began again at zero
    assert history.add(Counter(certificate_revoked=1))[0] == Counter(certificate_revoked=1)
    now[0] = 240.0 + 3600.0 + 1  # every kept sample is older than the hour
    assert history.add(Counter(certificate_revoked=1))[0] == Counter()


def test_readable_times() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert readable(now + dt.timedelta(days=12, hours=1), now) == "in 12 days"
    assert readable(now - dt.timedelta(hours=3, minutes=5), now) == "3 h ago"
    assert readable(now + dt.timedelta(seconds=20), now) == "just now"
    assert readable(now - dt.timedelta(days=1), now) == "1 day ago"
