"""`tether device connect --explain` shows the five steps with values that match the files."""

# The device suite's fixtures (its PKI, brokers, token device) are composed here, not copied;
# pytest finds them as module attributes, so the test parameters "redefine" the imports.
# ruff: noqa: F811

from __future__ import annotations

import subprocess

from tests.device.broker import Broker
from tests.device.conftest import (  # noqa: F401 - fixtures
    DevicePKI,
    TokenDevice,
    broker,
    pki,
    rogue_broker,
    token_device,
)
from tests.device.helpers import openssl_fingerprint
from tests.support.cli import tether


def _common(pki: DevicePKI, broker: Broker) -> list[str]:
    return ["device", "connect", "--ca", str(pki.cloud_ca), "--host", "127.0.0.1",
            "--port", str(broker.port), "--timeout", "10", "--explain"]  # fmt: skip


def test_explain_with_a_key_file(pki: DevicePKI, broker: Broker) -> None:
    result = tether(
        *_common(pki, broker), "--cert", str(pki.device_cert), "--key", str(pki.device_key),
        "--publish", "devices/SN-FILE-0001/hello", "--message", "hi",
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, result.stderr + out
    for number in range(1, 6):
        assert f"({number})" in out
    assert openssl_fingerprint(pki.cloud_ca) in out  # (1) the pinned CA
    assert openssl_fingerprint(pki.server_cert) in out  # (1) the server's certificate
    assert "CN=cloud.test" in out and "127.0.0.1" in out
    assert openssl_fingerprint(pki.device_cert) in out  # (2) the certificate presented
    assert "CN=SN-FILE-0001" in out and "CN=Tether Test Device CA" in out
    assert "software emulator key file" in out  # (3) says plainly it is not a secure element
    assert "0 (SUCCESS)" in out  # (4) the CONNACK
    assert "TLSv1.3" in out  # (5)
    assert "stdlib ssl pre-flight" in out
    assert "PUBACK" in out


def test_explain_with_a_token_key(
    pki: DevicePKI, broker: Broker, token_device: TokenDevice
) -> None:
    result = tether(
        *_common(pki, broker), "--cert", str(token_device.cert),
        "--pkcs11-module", token_device.token.module, "--token", token_device.token.label,
        "--key-label", token_device.key_label,
        env={"TETHER_PKCS11_PIN": token_device.token.pin},
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, result.stderr + out
    assert openssl_fingerprint(token_device.cert) in out
    assert token_device.token.label in out and token_device.token.module in out
    assert "CKA_SENSITIVE" in out and "CKA_EXTRACTABLE" in out
    assert "refused by the token" in out  # reading CKA_VALUE
    assert "TLSv1.2" in out and "ECDHE-ECDSA" in out
    assert "0 (SUCCESS)" in out
    assert token_device.token.pin not in out


def test_cli_untrusted_server_is_one_line_and_exit_3(pki: DevicePKI, rogue_broker: Broker) -> None:
    result = tether(
        *_common(pki, rogue_broker), "--cert", str(pki.device_cert), "--key", str(pki.device_key)
    )
    assert result.returncode == 3
    assert "(server_not_trusted)" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_needs_a_key_source(pki: DevicePKI, broker: Broker) -> None:
    result = tether(*_common(pki, broker), "--cert", str(pki.device_cert))
    assert result.returncode == 2  # a usage error
    assert "(usage_error)" in result.stderr and "no device key" in result.stderr


def test_cli_without_a_pin_fails_clearly(
    pki: DevicePKI, broker: Broker, token_device: TokenDevice
) -> None:
    result = tether(
        *_common(pki, broker), "--cert", str(token_device.cert),
        "--pkcs11-module", token_device.token.module, "--token", token_device.token.label,
        "--key-label", token_device.key_label, env={"TETHER_PKCS11_PIN": ""},
    )  # fmt: skip
    assert result.returncode == 3
    assert "TETHER_PKCS11_PIN" in result.stderr


def test_a_token_key_without_cert_uses_the_certificate_in_the_token(
    pki: DevicePKI, broker: Broker, token_device: TokenDevice
) -> None:
    """As the factory leaves a unit: key and certificate in the token under one label."""
    token = token_device.token
    key_args = ("--pkcs11-module", token.module, "--token", token.label,
                "--key-label", token_device.key_label)  # fmt: skip
    env = {"TETHER_PKCS11_PIN": token.pin}
    missing = tether(*_common(pki, broker), *key_args, env=env)
    assert missing.returncode == 3 and "(device_certificate_missing)" in missing.stderr
    written = subprocess.run(
        ["pkcs11-tool", "--module", token.module, "--token-label", token.label, "--login",
         "--pin", token.pin, "--write-object", str(token_device.cert), "--type", "cert",
         "--label", token_device.key_label, "--id", "01"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert written.returncode == 0, written.stderr.decode(errors="replace")
    result = tether(*_common(pki, broker), *key_args, env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    assert openssl_fingerprint(token_device.cert) in result.stdout
    assert f"connected as {token_device.serial}" in result.stdout
