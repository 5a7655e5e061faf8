"""Small helpers shared by the device tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.device.broker import Broker
from tests.device.conftest import DevicePKI, TokenDevice
from tether.device import CloudEndpoint, DeviceIdentity, FileKey, KeySource, Pkcs11Key

TIMEOUT = 10.0


def endpoint(pki: DevicePKI, broker: Broker, host: str = "127.0.0.1") -> CloudEndpoint:
    return CloudEndpoint(host=host, port=broker.port, pinned_ca=pki.cloud_ca)


def file_identity(pki: DevicePKI) -> DeviceIdentity:
    return DeviceIdentity.load(pki.device_cert, FileKey(pki.device_key))


def token_key(device: TokenDevice, pin: str | None = None, label: str | None = None) -> KeySource:
    return Pkcs11Key(
        module=device.token.module,
        token_label=device.token.label,
        key_label=label or device.key_label,
        pin=pin if pin is not None else device.token.pin,
    )


def openssl_fingerprint(path: Path) -> str:
    """The SHA-256 fingerprint as the openssl command computes it (AA:BB:...)."""
    out = subprocess.run(
        ["openssl", "x509", "-in", str(path), "-noout", "-fingerprint", "-sha256"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    return out.strip().split("=", 1)[1]
