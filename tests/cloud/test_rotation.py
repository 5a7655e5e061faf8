"""Rotating the gateway's certificate under a live session (``tether.cloud.rotation``).

A real cloud, a device connected over real TLS: the certificate is renewed from the server CA,
the change feed reloads it, the connected device keeps its session (it still answers PINGREQ),
and the next handshake shows the new certificate. Refusals change neither the files nor the
audit log.
"""

from __future__ import annotations

import datetime as dt
import functools
import stat
from pathlib import Path

import mqtt5
import pytest
from cryptography import x509

from tests.cloud.conftest import ACTOR, Cloud
from tests.cloud.gateway.harness import wait_for_log
from tests.support.cli import tether as run_tether
from tests.support.mqtt import RawClient
from tests.support.pki import CEREMONY_PASSPHRASE
from tether.cloud.rotation import SERVER_CERTIFICATE_ROTATED, rotate_server_certificate
from tether.errors import InvalidInputError
from tether.pki import Role, sha256_fingerprint


def _server_fingerprint(client: RawClient) -> str:
    der = client.sock.getpeercert(binary_form=True)
    assert der is not None
    return sha256_fingerprint(x509.load_der_x509_certificate(der))


def test_rotation_keeps_the_session_and_the_next_handshake_shows_the_new_certificate(
    cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    device = cloud.console_device("ROT-1")
    before = RawClient(cloud.port, cloud.tls_context(device))
    try:
        assert before.connect("ROT-1").reason_code == mqtt5.ConnAckReasonCode.SUCCESS
        old = _server_fingerprint(before)

        rotation = rotate_server_certificate(
            cloud.settings, cloud.registry, cloud.pki.server_ca, actor=ACTOR
        )
        assert rotation.previous_fingerprint == old != rotation.fingerprint
        wait_for_log(caplog, "server_certificate_reloaded")

        after = RawClient(cloud.port, cloud.tls_context(device))
        try:
            assert _server_fingerprint(after) == rotation.fingerprint
            # Same names as before (a renewal), valid for the server profile's default.
            san = rotation.certificate.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value
            assert san.get_values_for_type(x509.DNSName) == ["localhost"]
            assert rotation.certificate.not_valid_after_utc > dt.datetime.now(dt.UTC)
        finally:
            after.close()
        # The session from before the rotation is still served.
        before.send(mqtt5.PingReqPacket())
        assert isinstance(before.recv(), mqtt5.PingRespPacket)
        assert [i.name for i in cloud.service.gateway.sessions()] == ["ROT-1"]
    finally:
        before.close()
    entries = [e for e in cloud.registry.list_audit(limit=5).items if e.action.startswith("gate")]
    assert entries[0].action == SERVER_CERTIFICATE_ROTATED
    assert entries[0].target == rotation.fingerprint and entries[0].details["previous"] == old


@pytest.mark.parametrize("case", ["device-ca", "unpinned-server-ca"])
def test_a_refused_rotation_changes_nothing(cloud: Cloud, case: str) -> None:
    if case == "device-ca":
        ca, code = cloud.pki.device_ca, "wrong_ca_role"
    else:
        ca = cloud.pki.root.create_issuing_ca(common_name="Unpinned Server CA", role=Role.SERVER)
        code = "server_ca_not_pinned"
    files = {
        path: path.read_bytes() for path in (cloud.settings.server_chain, cloud.settings.server_key)
    }
    last = cloud.registry.last_audit_id()
    with pytest.raises(InvalidInputError) as refused:
        rotate_server_certificate(cloud.settings, cloud.registry, ca, actor=ACTOR)
    assert refused.value.code == code
    assert {path: path.read_bytes() for path in files} == files
    assert cloud.registry.last_audit_id() == last
    assert [p.name for p in cloud.settings.data_dir.iterdir() if p.name.startswith(".")] == []


def test_cli_rotates_into_the_data_directory(ca_dirs: dict[str, Path], tmp_path: Path) -> None:
    server = ca_dirs["server"]
    tether = functools.partial(run_tether, env={"TETHER_CA_PASSPHRASE": CEREMONY_PASSPHRASE})
    data = tmp_path / "data"
    assert tether("cloud", "init", data, "--server-ca", server).returncode == 0
    before = (data / "server.chain.pem").read_bytes()
    done = tether(
        "cloud", "rotate-server-cert", data, "--server-ca", server, "--dns", "mqtt.example"
    )
    assert done.returncode == 0, done.stderr
    chain = x509.load_pem_x509_certificates((data / "server.chain.pem").read_bytes())
    assert (data / "server.chain.pem").read_bytes() != before
    assert sha256_fingerprint(chain[0]) in done.stdout
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.example"]
    assert stat.S_IMODE((data / "server.key.pem").stat().st_mode) == 0o600
    # A root directory is not a server issuing CA: one line, exit 3, nothing changed.
    rotated = (data / "server.chain.pem").read_bytes()
    wrong = tether("cloud", "rotate-server-cert", data, "--server-ca", ca_dirs["root"])
    assert wrong.returncode == 3 and wrong.stderr.startswith("error (")
    assert (data / "server.chain.pem").read_bytes() == rotated
