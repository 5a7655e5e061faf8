"""``tether cloud serve --workers 2`` with enrollment on: devices enroll over MQTT on any worker,
and a "renew now" reaches the device once whichever worker holds its session."""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests.cli.test_cloud_serve import _init, _kill, _read_until, serve_gateway_workers, tether
from tests.support.mqtt import paho_connect
from tests.support.pki import CEREMONY_PASSPHRASE, Issued
from tether.pki import generate_key
from tether.pki.store import CaDirectory, pem

UNITS = 4


@pytest.fixture
def enrolling_cloud(ca_dirs: dict[str, Path], tmp_path: Path) -> Path:
    """A data directory with enrollment on and a factory CA whose units register on contact."""
    data = tmp_path / "data"
    _init(data, ca_dirs)
    factory_pem = tmp_path / "factory.pem"
    factory_pem.write_bytes(pem(CaDirectory.open(ca_dirs["factory"]).certificate))
    registered = tether("cloud", "register-ca", data, factory_pem, "--role", "factory",
                    "--allow-jit")  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    config = data / "cloud.json"
    settings = json.loads(config.read_text())
    settings["enrollment"] = {"enabled": True, "est_port": 0}
    config.write_text(json.dumps(settings))
    return data


def test_two_workers_enroll_and_push_renew_now_once(
    enrolling_cloud: Path, ca_dirs: dict[str, Path], tmp_path: Path
) -> None:
    data = enrolling_cloud
    server = serve_gateway_workers(data)
    try:
        ready = _read_until(
            server.stdout, r"listening on 127\.0\.0\.1:(\d+) \(2 workers", time.monotonic() + 60
        )
        port = int(ready[1])
        factory = CaDirectory.open(ca_dirs["factory"]).issuing(CEREMONY_PASSPHRASE)
        device_ca = CaDirectory.open(ca_dirs["device"]).certificate
        units = tmp_path / "units"
        enrolled: list[Issued] = []
        for index in range(UNITS):
            serial = f"WK-{index}"
            key = generate_key()
            birth = Issued(factory.issue_device_certificate_for_key(key.public_key(), serial), key)
            birth = birth.write(units, f"{serial}-birth")
            out = units / f"{serial}.pem"
            done = tether(
                "device", "enroll", "--cert", birth.cert_path, "--key", birth.key_path,
                "--out", out, "--ca", data / "pinned-ca.pem", "--host", "127.0.0.1",
                "--port", str(port),
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert f"enrolled {serial}" in done.stdout
            operational = x509.load_pem_x509_certificate(out.read_bytes())
            assert operational.issuer == device_ca.subject
            enrolled.append(Issued(operational, key).write(units, serial))

        device = paho_connect(port, data / "pinned-ca.pem", enrolled[0], "WK-0")
        try:
            assert device.subscribe("devices/WK-0/tether/renew-now")[0].value == 1
            asked = tether("cloud", "renew-now", data, "WK-0")
            assert asked.returncode == 0, asked.stderr
            first = device.messages.get(timeout=15)
            assert first.topic == "devices/WK-0/tether/renew-now"
            with pytest.raises(queue.Empty):  # each worker's clock reads it; one sends it
                device.messages.get(timeout=3)
        finally:
            device.stop()
    finally:
        _kill(server)
