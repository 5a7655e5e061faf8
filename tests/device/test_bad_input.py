"""Bad input gets a clear TetherError with a specific code, before anything is sent."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.device.broker import Broker, free_port
from tests.device.conftest import DevicePKI, TokenDevice
from tests.device.helpers import TIMEOUT, endpoint, file_identity, token_key
from tether.device import CloudEndpoint, DeviceClient, DeviceIdentity, FileKey
from tether.device.errors import (
    BadCertificateError,
    ConnectionFailedError,
    DeviceFileNotFoundError,
    KeyCertificateMismatchError,
    NotConnectedError,
)
from tether.errors import AuthenticationError, ConfigurationError, InvalidInputError, NotFoundError
from tether.secure_element.errors import (
    InvalidLabelError,
    KeyNotFoundError,
    Pkcs11ModuleError,
    TokenNotFoundError,
    WrongPinError,
)


def test_missing_certificate_file(pki: DevicePKI, tmp_path: Path) -> None:
    with pytest.raises(DeviceFileNotFoundError) as info:
        DeviceIdentity.load(tmp_path / "absent.crt", FileKey(pki.device_key))
    assert info.value.code == "file_not_found"
    assert "absent.crt" in info.value.message


def test_missing_key_file(pki: DevicePKI, tmp_path: Path) -> None:
    with pytest.raises(DeviceFileNotFoundError):
        DeviceIdentity.load(pki.device_cert, FileKey(tmp_path / "absent.key"))


def test_certificate_file_that_is_not_a_certificate(pki: DevicePKI, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.crt"
    bogus.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    with pytest.raises(BadCertificateError) as info:
        DeviceIdentity.load(bogus, FileKey(pki.device_key))
    assert info.value.code == "bad_certificate"


def test_missing_pinned_ca(pki: DevicePKI, broker: Broker, tmp_path: Path) -> None:
    ep = CloudEndpoint(host="127.0.0.1", port=broker.port, pinned_ca=tmp_path / "absent-ca.pem")
    with pytest.raises(DeviceFileNotFoundError) as info:
        DeviceClient(file_identity(pki), ep).connect(TIMEOUT)
    assert "pinned CA" in info.value.message


def test_key_file_that_does_not_match_the_certificate(pki: DevicePKI, broker: Broker) -> None:
    identity = DeviceIdentity.load(pki.device_cert, FileKey(pki.other_key))
    before = broker.log_text().count("New connection from")
    with pytest.raises(KeyCertificateMismatchError) as info:
        DeviceClient(identity, endpoint(pki, broker)).connect(TIMEOUT)
    assert info.value.code == "key_certificate_mismatch"
    assert broker.log_text().count("New connection from") == before  # nothing was sent


def test_key_file_that_is_not_a_key(pki: DevicePKI, broker: Broker) -> None:
    identity = DeviceIdentity.load(pki.device_cert, FileKey(pki.device_cert))
    with pytest.raises(InvalidInputError) as info:
        DeviceClient(identity, endpoint(pki, broker)).connect(TIMEOUT)
    assert info.value.code == "bad_key_file"


def test_wrong_pin(pki: DevicePKI, broker: Broker, token_device: TokenDevice) -> None:
    identity = DeviceIdentity.load(token_device.cert, token_key(token_device, pin="000000"))
    with pytest.raises(AuthenticationError) as info:
        DeviceClient(identity, endpoint(pki, broker)).connect(TIMEOUT)
    assert isinstance(info.value, WrongPinError)
    assert info.value.code == "se_wrong_pin"
    assert "000000" not in info.value.message and "000000" not in repr(identity)


def test_wrong_key_label(pki: DevicePKI, broker: Broker, token_device: TokenDevice) -> None:
    identity = DeviceIdentity.load(token_device.cert, token_key(token_device, label="absent"))
    with pytest.raises(NotFoundError) as info:
        DeviceClient(identity, endpoint(pki, broker)).connect(TIMEOUT)
    assert isinstance(info.value, KeyNotFoundError)
    assert info.value.code == "se_key_not_found"
    assert "absent" in info.value.message


def test_wrong_token_label(pki: DevicePKI, broker: Broker, token_device: TokenDevice) -> None:
    key = token_key(token_device)
    identity = DeviceIdentity.load(token_device.cert, replace(key, token_label="no-such-token"))
    with pytest.raises(NotFoundError) as info:
        DeviceClient(identity, endpoint(pki, broker)).connect(TIMEOUT)
    assert isinstance(info.value, TokenNotFoundError)
    assert info.value.code == "se_token_not_found"
    assert "no-such-token" in info.value.message


def test_missing_pkcs11_module(
    pki: DevicePKI, broker: Broker, token_device: TokenDevice, tmp_path: Path
) -> None:
    key = replace(token_key(token_device), module=str(tmp_path / "no-such-module.so"))
    identity = DeviceIdentity.load(token_device.cert, key)
    before = broker.log_text().count("New connection from")
    with pytest.raises(ConfigurationError) as info:
        DeviceClient(identity, endpoint(pki, broker)).connect(TIMEOUT)
    assert isinstance(info.value, Pkcs11ModuleError)
    assert info.value.code == "se_module_not_found"
    assert broker.log_text().count("New connection from") == before  # nothing was sent


def test_key_label_the_secure_element_cannot_address(
    pki: DevicePKI, broker: Broker, token_device: TokenDevice
) -> None:
    identity = DeviceIdentity.load(token_device.cert, token_key(token_device, label="a/b"))
    with pytest.raises(InvalidInputError) as info:
        DeviceClient(identity, endpoint(pki, broker)).connect(TIMEOUT)
    assert isinstance(info.value, InvalidLabelError)
    assert info.value.code == "se_invalid_label"


def test_token_key_that_does_not_match_the_certificate(
    pki: DevicePKI, broker: Broker, token_device: TokenDevice
) -> None:
    # The file device's certificate with the token's key: the challenge signature fails.
    identity = DeviceIdentity.load(pki.device_cert, token_key(token_device))
    with pytest.raises(KeyCertificateMismatchError):
        DeviceClient(identity, endpoint(pki, broker)).connect(TIMEOUT)


def test_nothing_listening(pki: DevicePKI) -> None:
    ep = CloudEndpoint(host="127.0.0.1", port=free_port(), pinned_ca=pki.cloud_ca)
    with pytest.raises(ConnectionFailedError) as info:
        DeviceClient(file_identity(pki), ep).connect(TIMEOUT)
    assert info.value.code == "connection_failed"


def test_publish_before_connect(pki: DevicePKI, broker: Broker) -> None:
    with pytest.raises(NotConnectedError):
        DeviceClient(file_identity(pki), endpoint(pki, broker)).publish("t", b"x")


def test_bad_port() -> None:
    with pytest.raises(InvalidInputError):
        CloudEndpoint(host="127.0.0.1", port=70000, pinned_ca=Path("ca.pem"))
