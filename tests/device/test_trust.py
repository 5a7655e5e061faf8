"""The device trusts exactly the pinned CA: any other CA, a wrong name, or the system store fail."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509

from tests.device.broker import Broker, start_broker
from tests.device.conftest import DevicePKI
from tests.device.helpers import TIMEOUT, endpoint, file_identity
from tests.support.pki import TestPKI, pem, raw_ca, raw_leaf
from tether.device import CloudEndpoint, DeviceClient
from tether.device.errors import ServerNotTrustedError
from tether.errors import InvalidInputError
from tether.pki import Role


def test_server_from_a_rogue_ca_is_not_trusted(pki: DevicePKI, rogue_broker: Broker) -> None:
    device = DeviceClient(file_identity(pki), endpoint(pki, rogue_broker))
    with pytest.raises(ServerNotTrustedError) as info:
        device.connect(TIMEOUT)
    assert info.value.code == "server_not_trusted"
    assert "pinned CA" in info.value.message
    assert "unable to get local issuer certificate" in info.value.message
    # The device never got as far as MQTT: the broker saw no CONNECT.
    assert "New client connected" not in rogue_broker.log_text()


def test_server_certificate_for_another_name_is_not_trusted(
    pki: DevicePKI, misnamed_broker: Broker
) -> None:
    # Signed by the pinned CA, but for elsewhere.test / 10.9.9.9, not 127.0.0.1.
    device = DeviceClient(file_identity(pki), endpoint(pki, misnamed_broker))
    with pytest.raises(ServerNotTrustedError) as info:
        device.connect(TIMEOUT)
    assert "IP address mismatch" in info.value.message
    assert "New client connected" not in misnamed_broker.log_text()


def test_system_trust_store_is_never_consulted(
    pki: DevicePKI, rogue_broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Put the rogue CA where OpenSSL (and s2n) look for the system store: still refused.
    (tmp_path / "certs").mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.rogue_ca))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "certs"))
    device = DeviceClient(file_identity(pki), endpoint(pki, rogue_broker))
    with pytest.raises(ServerNotTrustedError):
        device.connect(TIMEOUT)
    assert "New client connected" not in rogue_broker.log_text()


def test_pinning_the_rogue_ca_is_what_it_takes(pki: DevicePKI, rogue_broker: Broker) -> None:
    # The control for the tests above: the same broker is fine once its CA is the pinned one.
    rogue_pinned = CloudEndpoint(host="127.0.0.1", port=rogue_broker.port, pinned_ca=pki.rogue_ca)
    with DeviceClient(file_identity(pki), rogue_pinned) as device:
        assert device.connect(TIMEOUT).reason_code == 0


def test_a_server_name_other_than_the_dialled_host_is_refused(
    pki: DevicePKI, broker: Broker
) -> None:
    other = CloudEndpoint(
        host="127.0.0.1", port=broker.port, pinned_ca=pki.cloud_ca, server_name="cloud.test"
    )
    with pytest.raises(InvalidInputError) as info:
        DeviceClient(file_identity(pki), other)
    assert info.value.code == "server_name_unsupported"


def test_the_agent_anchors_on_the_server_ca_not_on_the_root(pki: DevicePKI, tmp_path: Path) -> None:
    # One root, its server CA, and a legacy issuing CA from before issuing CAs carried EKUs
    # (no EKU, no role OU): a certificate viewer cannot tell it from a server CA, the root
    # signed both. The pinned file holds the server CA and the root, as `tether cloud init`
    # writes it; the agent must accept only chains through the server CA.
    shared = TestPKI("Shared Root")
    server_ca = shared.ca(Role.SERVER)
    legacy = raw_ca("Legacy Factory CA", shared.root_issued)
    pinned = tmp_path / "pinned-ca.pem"
    pinned.write_bytes(pem(server_ca.certificate, shared.root.certificate))
    good = shared.server("cloud.test").write(tmp_path, "good")
    forged = raw_leaf(
        legacy,
        "cloud.test",
        server=True,
        san=x509.SubjectAlternativeName(
            [x509.DNSName("cloud.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        ),
    ).write(tmp_path, "forged")
    good_cert, good_key = good.cert_path, good.key_path
    forged_cert, forged_key_path = forged.cert_path, forged.key_path
    brokers = [
        start_broker(tmp_path / name, client_ca=pki.client_ca_bundle, server_cert=cert,
                     server_key=key)
        for name, cert, key in (("good", good_cert, good_key),
                                ("forged", forged_cert, forged_key_path))
    ]  # fmt: skip
    try:
        good, impostor = brokers
        endpoint_good = CloudEndpoint(host="127.0.0.1", port=good.port, pinned_ca=pinned)
        with DeviceClient(file_identity(pki), endpoint_good) as device:
            assert device.connect(TIMEOUT).reason_code == 0
        endpoint_bad = CloudEndpoint(host="127.0.0.1", port=impostor.port, pinned_ca=pinned)
        with pytest.raises(ServerNotTrustedError):
            DeviceClient(file_identity(pki), endpoint_bad).connect(TIMEOUT)
        assert "New client connected" not in impostor.log_text()
    finally:
        for broker in brokers:
            broker.stop()
