"""``tether cloud`` as an operator runs it: real subprocesses, a real data directory, real peers."""

# The e2e cloud fixtures are composed here, not copied; pytest finds them as module
# attributes, so the test parameters "redefine" the imports.
# ruff: noqa: F811

from __future__ import annotations

import functools
import re
import signal
import stat
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from mqtt5 import DisconnectReasonCode

from tests.cloud.conftest import (  # noqa: F401 - fixtures
    TIMEOUT,
    Cloud,
    CloudPKI,
    cloud,
    cloud_pki,
)
from tests.cloud.gateway.harness import wait_for_log
from tests.support.cli import EXIT_TETHER_ERROR, cli_env, tether_command
from tests.support.cli import tether as run_tether
from tests.support.pki import CEREMONY_PASSPHRASE
from tether.cloud.registry import CertState, Registry
from tether.cloud.settings import CloudSettings
from tether.pki import RevokedEntry, sha256_fingerprint
from tether.pki.store import CaDirectory

PASSPHRASE = CEREMONY_PASSPHRASE  # of the session's ca_dirs
SECRETS = {"TETHER_CA_PASSPHRASE": PASSPHRASE}
# Any free metrics ports: a fixed default (9883) would clash with another serve running at once.
ANY_METRICS_PORTS = (
    "--metrics-port", "0", "--api-metrics-port", "0", "--publish-port", "0", "--workers", "1"
)  # fmt: skip
tether = functools.partial(run_tether, env=SECRETS)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_init_register_serve_and_a_real_mqtt_client(
    ca_dirs: dict[str, Path], cloud_pki: CloudPKI, tmp_path: Path
) -> None:
    data = tmp_path / "cloud"
    done = tether("cloud", "init", data, "--server-ca", ca_dirs["server"])
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "server.key.pem").stat().st_mode) == 0o600
    # Devices pin the server CA (then the root, so any client can build the chain).
    root_pem = (ca_dirs["root"] / "ca.crt.pem").read_bytes()
    server_ca_pem = (ca_dirs["server"] / "ca.crt.pem").read_bytes()
    assert (data / "pinned-ca.pem").read_bytes() == server_ca_pem + root_pem
    assert (data / "root-ca.pem").read_bytes() == root_pem
    assert {p.name for p in data.iterdir()} >= {
        "cloud.json",
        "server.chain.pem",
        "server.key.pem",
        "pinned-ca.pem",
        "registry.db",
    }
    assert not any("key" in p.name and p.name != "server.key.pem" for p in data.iterdir())

    device_ca_cert = ca_dirs["device"] / "ca.crt.pem"
    done = tether("cloud", "register-ca", data, device_ca_cert, "--role", "device", "--allow-jit")
    assert done.returncode == 0, done.stderr
    assert "registered" in done.stdout

    # A device certificate of that CA (made here with the CA directory's key).
    device_ca = CaDirectory.open(ca_dirs["device"]).issuing(PASSPHRASE)
    identity = cloud_pki.device("CLI-000001", ca=device_ca).write(tmp_path / "device", "CLI-000001")

    server = subprocess.Popen(
        tether_command(
            "cloud", "serve", data, "--port", "0", "--api-port", "0", *ANY_METRICS_PORTS
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(SECRETS, PYTHONUNBUFFERED="1"),
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # blocks until ready (or EOF if serve died)
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        assert match, f"serve printed {line!r}"
        port = match.group(1)
        published = subprocess.run(
            [
                "mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-V", "mqttv5",
                "-i", "CLI-000001", "-q", "1", "-t", "devices/CLI-000001/telemetry", "-m", "hi",
                "--cafile", str(data / "pinned-ca.pem"),
                "--cert", str(identity.cert_path), "--key", str(identity.key_path),
            ],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert published.returncode == 0, published.stderr
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
    # The device registered itself just in time and was seen.
    with Registry.open(CloudSettings.load(data).database_url) as registry:
        device = registry.get_device("CLI-000001")
        assert device.last_seen is not None
    listed = tether("cloud", "devices", data)
    assert listed.returncode == 0 and "CLI-000001" in listed.stdout


def test_init_into_a_non_empty_directory_is_refused_and_changes_nothing(
    ca_dirs: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "cloud"
    data.mkdir()
    (data / "notes.txt").write_text("keep me")
    before = _snapshot(data)
    done = tether("cloud", "init", data, "--server-ca", ca_dirs["server"])
    assert done.returncode == EXIT_TETHER_ERROR
    assert "error" in done.stderr
    assert _snapshot(data) == before


def test_init_with_a_device_ca_as_server_ca_is_refused(
    ca_dirs: dict[str, Path], tmp_path: Path
) -> None:
    done = tether("cloud", "init", tmp_path / "cloud", "--server-ca", ca_dirs["device"])
    assert done.returncode == EXIT_TETHER_ERROR
    assert "wrong_ca_role" in done.stderr
    assert not (tmp_path / "cloud").exists()


def test_register_ca_refuses_a_leaf_and_garbage(cloud: Cloud, tmp_path: Path) -> None:
    leaf = cloud.pki.device("CLI-000002", ca=cloud.pki.device_ca).write(tmp_path, "CLI-000002")
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n")
    before = [ca.fingerprint for ca in cloud.registry.list_cas()]
    data = cloud.settings.data_dir
    for path, code in ((leaf.cert_path, "not_a_ca_certificate"), (garbage, "pki_malformed_input")):
        done = tether("cloud", "register-ca", data, path, "--role", "device")
        assert done.returncode == EXIT_TETHER_ERROR, (path, done.stdout, done.stderr)
        assert f"({code})" in done.stderr
    assert [ca.fingerprint for ca in cloud.registry.list_cas()] == before


def test_revoke_of_an_unknown_certificate_exits_3(cloud: Cloud, tmp_path: Path) -> None:
    stranger = cloud.pki.device("CLI-000003", ca=cloud.pki.device_ca).write(tmp_path, "CLI-000003")
    last = cloud.registry.last_audit_id()
    done = tether("cloud", "revoke", cloud.settings.data_dir, stranger.cert_path)
    assert done.returncode == EXIT_TETHER_ERROR
    assert "error" in done.stderr
    assert cloud.registry.last_audit_id() == last


def test_revoke_with_an_unknown_reason_is_a_usage_error_and_changes_nothing(
    cloud: Cloud, tmp_path: Path
) -> None:
    device = cloud.console_device("CLI-000004")
    done = tether("cloud", "revoke", cloud.settings.data_dir, device.cert_path, "--reason", "bored")
    assert done.returncode == 2 and "(usage_error)" in done.stderr
    record = cloud.registry.get_certificate(sha256_fingerprint(device.certificate))
    assert record.state is CertState.ACTIVE


def test_cli_revoke_drops_the_live_session_of_a_running_cloud(
    cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    device = cloud.console_device("CLI-000005")
    live = cloud.paho(device, "CLI-000005")
    try:
        done = tether("cloud", "revoke", cloud.settings.data_dir, device.cert_path)
        assert done.returncode == 0, done.stderr
        finished = time.monotonic()
        reason = live.disconnects.get(timeout=TIMEOUT)
        assert time.monotonic() - finished < 2.0
        assert reason.value == DisconnectReasonCode.ADMINISTRATIVE_ACTION
        record = cloud.registry.get_certificate(sha256_fingerprint(device.certificate))
        assert record.revocation_reason is x509.ReasonFlags.key_compromise
        assert wait_for_log(caplog, "session_dropped").identity == "CLI-000005"
        # paho reconnects by itself: the revoked certificate is refused at once.
        wait_for_log(caplog, "certificate_revoked")
        disable = tether("cloud", "disable", cloud.settings.data_dir, "CLI-000005")
        assert disable.returncode == 0 and "disabled" in disable.stdout
    finally:
        live.client.loop_stop()


def test_cli_publish_crl_revokes_and_drops_a_live_session(
    cloud: Cloud, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    factory = cloud.pki.factory_ca  # registered with just-in-time registration
    device = cloud.pki.device("CLI-000006", ca=factory).write(tmp_path, "CLI-000006")
    crl = factory.build_crl([RevokedEntry(device.certificate.serial_number, datetime.now(UTC))])
    crl_path = tmp_path / "factory.crl.pem"
    crl_path.write_bytes(crl.public_bytes(Encoding.PEM))
    data, factory_fp = cloud.settings.data_dir, sha256_fingerprint(factory.certificate)
    # A CRL signed by another CA is refused and changes nothing.
    forged = tmp_path / "forged.crl.pem"
    forged.write_bytes(cloud.pki.stranger_ca.build_crl([]).public_bytes(Encoding.PEM))
    last = cloud.registry.last_audit_id()
    refused = tether("cloud", "publish-crl", data, forged, "--ca", factory_fp)
    assert refused.returncode == EXIT_TETHER_ERROR and "crl_rejected" in refused.stderr
    assert cloud.registry.last_audit_id() == last
    live = cloud.paho(device, "CLI-000006")
    try:
        done = tether("cloud", "publish-crl", data, crl_path, "--ca", factory_fp)
        assert done.returncode == 0, done.stderr
        assert "revoked 1 certificate(s)" in done.stdout
        reason = live.disconnects.get(timeout=TIMEOUT)
        assert reason.value == DisconnectReasonCode.ADMINISTRATIVE_ACTION
        record = cloud.registry.get_certificate(sha256_fingerprint(device.certificate))
        assert record.state is CertState.REVOKED
        wait_for_log(caplog, "certificate_revoked")  # paho's reconnect is refused
    finally:
        live.client.loop_stop()


def test_cli_move_device_hands_the_serial_to_another_ca(
    cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    device = cloud.console_device("CLI-000007")  # bound to the device CA
    factory_fp = sha256_fingerprint(cloud.pki.factory_ca.certificate)
    live = cloud.paho(device, "CLI-000007")
    try:
        done = tether("cloud", "move-device", cloud.settings.data_dir, "CLI-000007",
                      "--ca", factory_fp)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert live.disconnects.get(timeout=TIMEOUT) is not None
        # The device CA's certificate no longer speaks for the serial.
        wait_for_log(caplog, "serial_bound_to_other_ca")
    finally:
        live.client.loop_stop()
    assert cloud.registry.get_device("CLI-000007").ca_fingerprint == factory_fp
    actions = {e.action: e for e in cloud.registry.list_audit(target="CLI-000007").items}
    assert actions["device.rebind"].details["to"] == factory_fp
    # paho's reconnect with the old CA's certificate was refused, and that was audited.
    refused = actions["connection.refused"].details
    assert refused["code"] == "serial_bound_to_other_ca"


@pytest.mark.parametrize(
    ("option", "code"),
    [(("--role", "worker"), "role_unknown"), (("--workers", "0"), "workers_invalid")],
)
def test_serve_refuses_a_bad_role_or_worker_count(
    option: tuple[str, str], code: str, tmp_path: Path
) -> None:
    done = tether("cloud", "serve", tmp_path, *option)
    assert done.returncode == EXIT_TETHER_ERROR
    assert code in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written
