"""The hygiene audit (``tether.cloud.hygiene``, ``tether audit``): one of each planted problem.

A real SQLite registry is seeded through its public methods with exactly one instance of each
problem, plus healthy neighbours that must not be reported; a clean registry reports nothing.
The live checks get a live view both as data and from a running gateway's ``/sessions``.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.cloud.conftest import ACTOR, Cloud, CloudPKI
from tests.support.cli import tether
from tests.support.mqtt import RawClient
from tests.support.pki import Issued, hostile_leaf
from tether.cloud.hygiene import (
    FindingCode,
    HygieneOptions,
    LiveSession,
    LiveView,
    audit,
)
from tether.cloud.observability.endpoints import GatewayEndpoints
from tether.cloud.observability.live import LiveViewUnavailable, read_live_view
from tether.cloud.registry import CARole, DeviceStatus, Provisioning, Registry
from tether.cloud.settings import CloudSettings
from tether.cloud.setup import init_data_dir
from tether.pki import IssuingCA, generate_key, sha256_fingerprint
from tether.pki.store import pem

NOW = dt.datetime.now(dt.UTC)


def _misfit(ca: IssuingCA, serial: str) -> x509.Certificate:
    """A device certificate of ``ca`` that breaks the profile: it carries a SAN."""
    return hostile_leaf(
        ca,
        serial,
        not_before=NOW - dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=300),
        san=x509.SubjectAlternativeName([x509.DNSName("misfit.example")]),
    ).certificate


def _device(
    registry: Registry,
    ca: IssuingCA,
    serial: str,
    cert: x509.Certificate | None = None,
    *,
    seen: dt.datetime = NOW,
) -> x509.Certificate:
    cert = cert or ca.issue_device_certificate_for_key(generate_key().public_key(), serial)
    registry.add_device(serial, provisioning=Provisioning.CONSOLE, actor=ACTOR)
    registry.add_certificate(
        cert,
        device_serial=serial,
        issuer_fingerprint=sha256_fingerprint(ca.certificate),
        actor=ACTOR,
    )
    registry.touch_device(serial, seen)  # last_seen only moves forward: set it once
    return cert


def _data(tmp_path: Path, pki: CloudPKI) -> CloudSettings:
    settings = init_data_dir(
        tmp_path / "data", server_ca=pki.server_ca, root_ca=pem(pki.root.certificate)
    )
    with Registry.open(settings.database_url) as registry:
        registry.register_ca(pki.device_ca.certificate, role=CARole.DEVICE, actor=ACTOR)
        _device(registry, pki.device_ca, "HEALTHY-1")  # a neighbour nothing is wrong with
    return settings


@pytest.fixture
def clean(tmp_path: Path, cloud_pki: CloudPKI) -> CloudSettings:
    return _data(tmp_path, cloud_pki)


@pytest.fixture
def planted(tmp_path: Path, cloud_pki: CloudPKI) -> Iterator[tuple[CloudSettings, dict[str, str]]]:
    settings = _data(tmp_path, cloud_pki)
    root = cloud_pki.root
    expiring_ca = root.create_issuing_ca(
        common_name="Expiring Device CA", role=CARole.DEVICE, validity=dt.timedelta(days=20)
    )
    with Registry.open(settings.database_url) as registry:
        registry.register_ca(expiring_ca.certificate, role=CARole.DEVICE, actor=ACTOR)
        registry.register_ca(
            cloud_pki.factory_ca.certificate,
            role=CARole.FACTORY,
            allow_auto_registration=True,
            actor=ACTOR,
        )
        soon = cloud_pki.device_ca.issue_device_certificate_for_key(
            generate_key().public_key(), "EXPIRING-1", validity=dt.timedelta(days=10)
        )
        _device(registry, cloud_pki.device_ca, "EXPIRING-1", soon)
        _device(registry, cloud_pki.device_ca, "MISFIT-1", _misfit(cloud_pki.device_ca, "MISFIT-1"))
        _device(registry, cloud_pki.device_ca, "LOST-1", seen=NOW - dt.timedelta(days=45))
        # Disabled long ago and unseen since: not "lost", already dealt with.
        _device(registry, cloud_pki.device_ca, "RETIRED-1", seen=NOW - dt.timedelta(days=400))
        registry.set_device_status("RETIRED-1", DeviceStatus.DISABLED, actor=ACTOR)
        revoked = _device(registry, cloud_pki.device_ca, "REVOKED-1")
        registry.revoke_certificate(
            sha256_fingerprint(revoked), reason=x509.ReasonFlags.key_compromise, actor=ACTOR
        )
    yield (
        settings,
        {
            "expiring_ca": sha256_fingerprint(expiring_ca.certificate),
            "factory_ca": sha256_fingerprint(cloud_pki.factory_ca.certificate),
            "revoked": sha256_fingerprint(revoked),
        },
    )


def _codes(report: object) -> list[tuple[str, str]]:
    return sorted((f.code.value, f.subject) for f in report.findings)  # type: ignore[attr-defined]


def test_each_planted_problem_is_found_once(planted: tuple[CloudSettings, dict[str, str]]) -> None:
    settings, ids = planted
    live = LiveView(
        sessions=(
            LiveSession("HEALTHY-1", "0" * 64, "127.0.0.1:5000"),  # unknown fp: not a finding
            LiveSession("REVOKED-1", ids["revoked"], "127.0.0.1:5001"),
        ),
        contested=(),
    )
    with Registry.open(settings.database_url) as registry:
        report = audit(registry, HygieneOptions(), live=live)
    assert _codes(report) == sorted(
        [
            ("ca_allows_jit", "CN=E2E Factory CA,OU=tether:factory"),
            ("ca_expiring", "CN=Expiring Device CA,OU=tether:device"),
            ("certificate_expiring", "EXPIRING-1"),
            ("certificate_profile_violation", "MISFIT-1"),
            ("device_not_seen", "LOST-1"),
            ("revoked_certificate_connected", "REVOKED-1"),
        ]
    )
    assert report.skipped == {}
    by_code = {f.code: f for f in report.findings}
    assert by_code[FindingCode.CA_EXPIRING].fingerprint == ids["expiring_ca"]
    assert "san.on_client" in by_code[FindingCode.CERTIFICATE_PROFILE].message


def test_a_clean_registry_has_no_findings(clean: CloudSettings) -> None:
    with Registry.open(clean.database_url) as registry:
        report = audit(registry, live=LiveView(sessions=()))
    assert report.clean and report.findings == () and report.skipped == {}


def test_without_a_live_view_the_live_checks_are_skipped_not_passed(clean: CloudSettings) -> None:
    with Registry.open(clean.database_url) as registry:
        report = audit(registry, live_unavailable="gateway not running")
    assert set(report.skipped) == {"revoked_certificate_connected", "certificate_used_twice"}
    assert report.to_dict()["skipped"]["certificate_used_twice"] == "gateway not running"


@pytest.mark.parametrize("days", [0, -1, True])
def test_bad_thresholds_are_refused(days: object) -> None:
    with pytest.raises(ValueError, match="whole number of days"):
        HygieneOptions(certificate_days=days)  # type: ignore[arg-type]


def test_cli_exit_status_and_json(
    planted: tuple[CloudSettings, dict[str, str]], tmp_path: Path, cloud_pki: CloudPKI
) -> None:
    settings, _ = planted
    found = tether("audit", str(settings.data_dir), "--json", "--no-live")
    assert found.returncode == 1, found.stderr
    report = json.loads(found.stdout)
    assert {f["code"] for f in report["findings"]} == {
        "ca_allows_jit",
        "ca_expiring",
        "certificate_expiring",
        "certificate_profile_violation",
        "device_not_seen",
    }
    assert report["skipped"]["revoked_certificate_connected"] == "--no-live was given"
    # Longer horizons find more; a bad one is a usage error with its code.
    refused = tether("audit", str(settings.data_dir), "--certificate-days", "0")
    assert refused.returncode == 3 and "audit_option_invalid" in refused.stderr


def test_cli_clean_exits_zero_and_says_why_live_checks_were_skipped(clean: CloudSettings) -> None:
    # Nothing listens on the metrics port of this data directory: the live checks are skipped.
    raw = json.loads((clean.data_dir / "cloud.json").read_text())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        raw["metrics"]["port"] = probe.getsockname()[1]
    (clean.data_dir / "cloud.json").write_text(json.dumps(raw))
    done = tether("audit", str(clean.data_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no findings" in done.stdout
    assert "skipped" in done.stdout and "cannot read the gateway's live view" in done.stdout


def _connect_from(host: str, cloud: Cloud, identity: Issued, client_id: str) -> RawClient:
    """An MQTT 5 session from a chosen loopback source address (127.0.0.x)."""
    client = RawClient(cloud.port, cloud.tls_context(identity), source=host)
    assert client.connect(client_id) is not None  # the CONNACK
    return client


def test_a_certificate_used_from_two_addresses_is_found_live(cloud: Cloud) -> None:
    endpoints = GatewayEndpoints(cloud.service, host="127.0.0.1", port=0, feed_max_lag=5.0)
    port = cloud.running.call(endpoints.start())
    clone = cloud.console_device("CLONED-1")
    opened = [_connect_from("127.0.0.2", cloud, clone, "CLONED-1")]
    try:
        # One take-over from elsewhere is a device that changed networks: not a finding.
        opened.append(_connect_from("127.0.0.3", cloud, clone, "CLONED-1"))
        assert read_live_view("127.0.0.1", port).contested == ()
        # Taking turns is two devices sharing one key.
        opened.append(_connect_from("127.0.0.2", cloud, clone, "CLONED-1"))
        view = read_live_view("127.0.0.1", port)
        assert [s.identity for s in view.sessions] == ["CLONED-1"]
        report = audit(cloud.registry, live=view)
        used_twice = [f for f in report.findings if f.code == FindingCode.CERTIFICATE_USED_TWICE]
        assert len(used_twice) == 1
        assert used_twice[0].fingerprint == sha256_fingerprint(clone.certificate)
        assert "127.0.0.2" in used_twice[0].message and "127.0.0.3" in used_twice[0].message
    finally:
        for sock in opened:
            sock.close()
        cloud.running.call(endpoints.stop())
    with pytest.raises(LiveViewUnavailable):
        read_live_view("127.0.0.1", port)  # stopped: a clear error, not an empty view


def test_the_api_runs_the_same_audit(
    planted: tuple[CloudSettings, dict[str, str]], cloud_pki: CloudPKI
) -> None:
    from fastapi.testclient import TestClient

    from tether.cloud.admin import create_admin
    from tether.cloud.api import create_app

    settings, ids = planted
    with Registry.open(settings.database_url) as registry:
        token = create_admin(registry, "auditor", actor="test:setup").token
        view = LiveView(sessions=(LiveSession("REVOKED-1", ids["revoked"], "127.0.0.1:9"),))
        app = create_app(
            registry, root_certificate=cloud_pki.root.certificate, live_view=lambda: view
        )
        try:
            with TestClient(app, base_url="https://testserver") as client:
                assert client.get("/api/v1/audit/hygiene").status_code == 401
                answer = client.get(
                    "/api/v1/audit/hygiene",
                    params={"certificate_days": 5},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert answer.status_code == 200
                body = answer.json()
                refused = client.get(
                    "/api/v1/audit/hygiene",
                    params={"ca_days": 0},
                    headers={"Authorization": f"Bearer {token}"},
                )
        finally:
            app.state.tether_close()
    codes = {f["code"] for f in body["findings"]}
    # EXPIRING-1 expires in 10 days: outside a 5-day horizon.
    assert codes == {
        "ca_allows_jit",
        "ca_expiring",
        "certificate_profile_violation",
        "device_not_seen",
        "revoked_certificate_connected",
    }
    assert body["options"]["certificate_days"] == 5 and body["skipped"] == {}
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_request"
