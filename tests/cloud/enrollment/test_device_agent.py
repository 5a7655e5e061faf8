"""The device agent with a key in SoftHSM2: `tether device enroll` from the factory birth
certificate, `tether device renew --rotate-to` to a new SE key, then a connect with it."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from tests.cloud.enrollment.conftest import Enrolling
from tests.softhsm import SoftHSM
from tests.support.cli import tether
from tether.device import CloudEndpoint, DeviceIdentity, Pkcs11Key
from tether.device.connection import DeviceClient
from tether.device.enrollment import due_for_renewal
from tether.pki.store import pem
from tether.secure_element import Pkcs11SecureElement


def test_enroll_and_rotate_with_a_pkcs11_key(
    enrolling: Enrolling, softhsm: SoftHSM, tmp_path: Path
) -> None:
    cloud = enrolling.cloud
    token = softhsm.new_token()
    with Pkcs11SecureElement.open(token.module, token.label, token.pin) as element:
        public_key = element.generate_key("agent-1")
    birth = cloud.pki.factory_ca.issue_device_certificate_for_key(public_key, "agent-1")
    birth_path = tmp_path / "birth.pem"
    birth_path.write_bytes(pem(birth))
    operational = tmp_path / "operational.pem"
    common = [
        "--ca", str(cloud.settings.pinned_ca), "--host", "127.0.0.1", "--port", str(cloud.port),
        "--pkcs11-module", token.module, "--token", token.label,
    ]  # fmt: skip
    env = {"TETHER_PKCS11_PIN": token.pin}
    enrolled = tether(
        "device", "enroll", "--cert", str(birth_path), "--out", str(operational),
        "--key-label", "agent-1", *common, env=env,
    )  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    assert "enrolled agent-1" in enrolled.stdout
    first = x509.load_pem_x509_certificate(operational.read_bytes())
    assert first.issuer == cloud.pki.device_ca.certificate.subject
    rotated = tether(
        "device", "renew", "--cert", str(operational), "--key-label", "agent-1",
        "--rotate-to", "agent-1b", *common, env=env,
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    assert "rotated agent-1" in rotated.stdout
    second = x509.load_pem_x509_certificate(operational.read_bytes())
    assert second.public_key() != first.public_key()
    identity = DeviceIdentity.load(
        operational, Pkcs11Key(token.module, token.label, "agent-1b", token.pin)
    )
    endpoint = CloudEndpoint(host="127.0.0.1", port=cloud.port, pinned_ca=cloud.settings.pinned_ca)
    with DeviceClient(identity, endpoint) as client:
        assert client.connect(10).client_id == "agent-1"
    history = cloud.registry.certificate_history("agent-1")
    assert [kind for *_, kind in history] == ["enrolled", "rotated"]


def test_renew_at_two_thirds_of_the_lifetime(enrolling: Enrolling) -> None:
    cloud = enrolling.cloud
    certificate = cloud.pki.device("ra-1", ca=cloud.pki.device_ca).certificate
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    begin = certificate.not_valid_before_utc
    assert not due_for_renewal(certificate, fraction=2 / 3, now=begin + lifetime / 2)
    assert due_for_renewal(certificate, fraction=2 / 3, now=begin + lifetime * 0.7)
