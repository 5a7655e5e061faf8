"""Fixtures for the device agent: a test PKI, real mosquitto brokers, device identities."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.device.broker import Broker, start_broker
from tests.softhsm import Token
from tests.support.pki import Issued, TestPKI, pem
from tether.pki import IssuingCA, Role, generate_key


@dataclass(frozen=True)
class DevicePKI:
    """Paths of the generated PKI; the device CA issues devices, the cloud CA the server."""

    root: Path
    device_ca: IssuingCA
    client_ca_bundle: Path  # root + device CA: what mosquitto trusts for clients
    cloud_ca: Path  # the CA the device pins
    server_cert: Path
    server_key: Path
    rogue_ca: Path
    rogue_server_cert: Path
    rogue_server_key: Path
    device_cert: Path
    device_key: Path
    other_key: Path  # a valid P-256 key that belongs to no certificate here
    misnamed_server_cert: Path  # from the pinned CA, but for another name and address
    misnamed_server_key: Path
    subscriber_cert: Path  # a second device, for mosquitto_sub
    subscriber_key: Path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevicePKI:
    d = tmp_path_factory.mktemp("device-pki")
    devices = TestPKI("Tether Test Root", ca_names="Tether Test")  # its DEVICE CA: devices
    cloud = TestPKI("Tether Test Cloud CA", ca_names="Tether Test")  # its SERVER CA: brokers
    rogue = TestPKI("Rogue CA", ca_names="Rogue")
    device_ca = devices.ca(Role.DEVICE)
    (d / "client-ca.pem").write_bytes(pem(devices.root.certificate, device_ca.certificate))
    server = cloud.server("cloud.test").write(d, "server")
    rogue_server = rogue.server("cloud.test").write(d, "rogue-server")
    device = devices.device("SN-FILE-0001").write(d, "device")
    other = Issued(device_ca.certificate, generate_key()).write(d, "other")
    misnamed = cloud.server("elsewhere.test", "10.9.9.9").write(d, "misnamed-server")
    subscriber = devices.device("SN-SUB-0001").write(d, "subscriber")
    return DevicePKI(
        root=devices.root_issued.write(d, "root").cert_path,
        device_ca=device_ca,
        client_ca_bundle=d / "client-ca.pem",
        cloud_ca=cloud.root_issued.write(d, "cloud-ca").cert_path,
        server_cert=server.cert_path,
        server_key=server.key_path,
        rogue_ca=rogue.root_issued.write(d, "rogue-ca").cert_path,
        rogue_server_cert=rogue_server.cert_path,
        rogue_server_key=rogue_server.key_path,
        device_cert=device.cert_path,
        device_key=device.key_path,
        other_key=other.key_path,
        misnamed_server_cert=misnamed.cert_path,
        misnamed_server_key=misnamed.key_path,
        subscriber_cert=subscriber.cert_path,
        subscriber_key=subscriber.key_path,
    )


@pytest.fixture(scope="module")
def broker(pki: DevicePKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Mosquitto with the server certificate from the cloud CA (the one the device pins)."""
    b = start_broker(
        tmp_path_factory.mktemp("broker"),
        client_ca=pki.client_ca_bundle,
        server_cert=pki.server_cert,
        server_key=pki.server_key,
    )
    yield b
    b.stop()


@pytest.fixture(scope="module")
def rogue_broker(pki: DevicePKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Mosquitto whose server certificate comes from the rogue CA."""
    b = start_broker(
        tmp_path_factory.mktemp("rogue-broker"),
        client_ca=pki.client_ca_bundle,
        server_cert=pki.rogue_server_cert,
        server_key=pki.rogue_server_key,
    )
    yield b
    b.stop()


@pytest.fixture(scope="module")
def misnamed_broker(pki: DevicePKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Mosquitto with a server certificate from the pinned CA but for another host name."""
    b = start_broker(
        tmp_path_factory.mktemp("misnamed-broker"),
        client_ca=pki.client_ca_bundle,
        server_cert=pki.misnamed_server_cert,
        server_key=pki.misnamed_server_key,
    )
    yield b
    b.stop()


@pytest.fixture(scope="module")
def tls13_broker(pki: DevicePKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Mosquitto that accepts TLS 1.3 only: whoever connects to it speaks TLS 1.3."""
    b = start_broker(
        tmp_path_factory.mktemp("tls13-broker"),
        client_ca=pki.client_ca_bundle,
        server_cert=pki.server_cert,
        server_key=pki.server_key,
        tls_version="tlsv1.3",
    )
    yield b
    b.stop()


@dataclass(frozen=True)
class TokenDevice:
    """A device whose key was generated inside a token (SoftHSM2 or a TPM), with its certificate."""

    token: Token
    key_label: str
    serial: str
    cert: Path


@pytest.fixture
def token_device(token: Token, pki: DevicePKI, tmp_path: Path) -> TokenDevice:
    """Generate the key in the token with pkcs11-tool, certify its public key with the device CA."""
    label = "device-key"
    made = subprocess.run(
        [
            "pkcs11-tool", "--module", token.module, "--token-label", token.label,
            "--login", "--pin", token.pin, "--keypairgen", "--key-type", "EC:prime256v1",
            "--label", label, "--id", "01",
        ],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr.decode(errors="replace")
    # Read the public half with pkcs11-tool (a subprocess): it stays out of this process's
    # PKCS#11 state, and it is a tool no one here wrote.
    pub_der = tmp_path / "token-pub.der"
    read = subprocess.run(
        [
            "pkcs11-tool", "--module", token.module, "--token-label", token.label,
            # Logged in, as Tether always is: tpm2-pkcs11 1.9 now and then fails an anonymous
            # read of a public key object ("cannot create EVP_PKEY"; about 1 in 30 here).
            "--login", "--pin", token.pin,
            "--read-object", "--type", "pubkey", "--label", label, "-o", str(pub_der),
        ],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr.decode(errors="replace")
    public_key = serialization.load_der_public_key(pub_der.read_bytes())
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    serial = "SN-HSM-0001"
    issued = Issued(pki.device_ca.issue_device_certificate_for_key(public_key, serial))
    cert = issued.write(tmp_path, "token-device").cert_path
    return TokenDevice(token=token, key_label=label, serial=serial, cert=cert)
