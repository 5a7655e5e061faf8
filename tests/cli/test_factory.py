"""``tether factory provision`` end to end: the real CLI in a subprocess, real SoftHSM2 tokens.

Secrets go in by environment only; the assertions read the token (through the secure element
and pkcs11-tool) and the manufacturing log, never the command's own claims alone.
"""

# The factory suite's session PKI fixture is composed here, not copied; pytest finds it as a
# module attribute, so the test parameters "redefine" the import.
# ruff: noqa: F811

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests.factory.conftest import (  # noqa: F401 - the factory suite's CA directories
    CA_PASSPHRASE,
    EMULATOR_PASSPHRASE,
    Pki,
    cli_env,
    file_state,
    pki,
    token_objects,
)
from tests.softhsm import SoftHSM, Token
from tests.support.cli import EXIT_TETHER_ERROR, tether
from tether.factory import ManufacturingLog
from tether.pki import Role, RootCA, sha256_fingerprint, verify_chain
from tether.pki.store import pem
from tether.secure_element import EmulatedSecureElement, Pkcs11SecureElement


def token_args(token: Token) -> list[str]:
    return ["--pkcs11-module", token.module, "--token", token.label]


def token_env(softhsm: SoftHSM, token: Token, **overrides: str) -> dict[str, str]:
    secrets = {"TETHER_PKCS11_PIN": token.pin, "TETHER_CA_PASSPHRASE": CA_PASSPHRASE}
    return cli_env(softhsm, **{**secrets, **overrides})


def token_labels(token: Token) -> list[str]:
    with Pkcs11SecureElement.open(token.module, token.label, token.pin) as element:
        return element.labels()


def one_line(text: str) -> str:
    """Output with Rich's line wrapping undone, for matching phrases."""
    return " ".join(text.split())


# Refusals of the command line itself (options that exclude each other): exit 2, not 3.
USAGE_CODES = {"factory_choose_secure_element", "factory_token_missing", "factory_serial_or_count"}


def refused(result: subprocess.CompletedProcess[str], code: str) -> None:
    """Exit 3 (2 for a usage error) with one ``error (code): ...`` line and no traceback."""
    out = result.stdout + result.stderr
    assert result.returncode == (2 if code in USAGE_CODES else EXIT_TETHER_ERROR), out
    assert f"({code})" in result.stderr, out
    assert "Traceback" not in out


@pytest.mark.tpm
def test_provision_one_unit(softhsm: SoftHSM, token: Token, pki: Pki, tmp_path: Path) -> None:
    log = tmp_path / "made.jsonl"
    result = tether(
        "factory", "provision", "--ca", pki.factory.path, "--log", log, "--serial", "SN-1",
        *token_args(token), env=token_env(softhsm, token),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "made 1 unit(s)" in one_line(result.stdout)
    assert "software emulator" not in result.stdout
    with Pkcs11SecureElement.open(token.module, token.label, token.pin) as element:
        assert element.labels() == ["SN-1"]
        cert = element.certificate("SN-1")
        assert cert is not None
        assert element.key_protection("SN-1").cannot_leave
    verify_chain(cert, intermediates=[pki.factory.certificate], roots=[pki.root.certificate])
    [record] = list(ManufacturingLog(log))
    assert record.serial == "SN-1"
    assert record.certificate_fingerprint == sha256_fingerprint(cert)


@pytest.mark.tpm
def test_count_continues_the_log(softhsm: SoftHSM, token: Token, pki: Pki, tmp_path: Path) -> None:
    log = tmp_path / "made.jsonl"
    for _ in range(2):
        result = tether(
            "factory", "provision", "--ca", pki.factory.path, "--log", log, "--count", "3",
            "--prefix", "LINE-", *token_args(token), env=token_env(softhsm, token),
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "made 3 unit(s)" in one_line(result.stdout)
    expected = [f"LINE-{n:06d}" for n in range(1, 7)]
    assert [r.serial for r in ManufacturingLog(log)] == expected
    assert token_labels(token) == expected


def test_emulator_says_it_is_one(softhsm: SoftHSM, pki: Pki, tmp_path: Path) -> None:
    log = tmp_path / "made.jsonl"
    directory = tmp_path / "emulator"
    env = cli_env(
        softhsm,
        TETHER_CA_PASSPHRASE=CA_PASSPHRASE,
        TETHER_EMULATOR_PASSPHRASE=EMULATOR_PASSPHRASE,
    )
    result = tether(
        "factory", "provision", "--ca", pki.factory.path, "--log", log, "--count", "2",
        "--emulator", directory, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = one_line(result.stdout)
    assert "software emulator:" in out
    assert "not in a secure element" in out
    assert "made 2 unit(s)" in out
    with EmulatedSecureElement.open(directory, EMULATOR_PASSPHRASE) as element:
        assert element.labels() == ["TTH-000001", "TTH-000002"]
    assert [r.key_location.startswith("emulator:") for r in ManufacturingLog(log)] == [True, True]


def test_wrong_ca_passphrase_stops_before_the_token(
    softhsm: SoftHSM, token: Token, pki: Pki, tmp_path: Path
) -> None:
    """The CA key is opened first: with a wrong PIN as well, the error is the CA's."""
    log = tmp_path / "made.jsonl"
    before = token_objects(token)
    env = token_env(
        softhsm, token, TETHER_CA_PASSPHRASE="not the passphrase", TETHER_PKCS11_PIN="99999999"
    )
    result = tether(
        "factory", "provision", "--ca", pki.factory.path, "--log", log, "--serial", "SN-1",
        *token_args(token), env=env,
    )  # fmt: skip
    refused(result, "pki_wrong_passphrase")
    assert token_objects(token) == before
    assert not log.exists()


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("wrong_pin", "se_wrong_pin"),
        ("missing_token", "se_token_not_found"),
        ("missing_module", "se_module_not_found"),
        ("device_ca", "wrong_ca_role"),
        ("invalid_serial", "pki_invalid_serial"),
        ("serial_in_log", "serial_already_made"),
        ("label_in_use", "se_label_in_use"),
        ("validity_past_issuer", "pki_validity_out_of_range"),
        ("no_secure_element", "factory_choose_secure_element"),
        ("token_and_emulator", "factory_choose_secure_element"),
        ("module_without_token", "factory_token_missing"),
        ("serial_and_count", "factory_serial_or_count"),
        ("neither_serial_nor_count", "factory_serial_or_count"),
        ("count_zero", "factory_bad_count"),
        ("bad_prefix", "pki_invalid_serial"),
        ("no_pin", "configuration_error"),
    ],
)
def test_refusals_change_nothing(
    softhsm: SoftHSM, token: Token, pki: Pki, tmp_path: Path, case: str, code: str
) -> None:
    check_refusal(softhsm, token, pki, tmp_path, case, code)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("wrong_pin", "se_wrong_pin"),
        ("label_in_use", "se_label_in_use"),
        ("tpm_not_running", "se_token_not_found"),
    ],
)
def test_refusals_on_the_tpm_change_nothing(
    softhsm: SoftHSM, tpm_token: Token, pki: Pki, tmp_path: Path, case: str, code: str
) -> None:
    """The TPM's own bad inputs through the CLI: one line, exit 3, the token unchanged."""
    check_refusal(softhsm, tpm_token, pki, tmp_path, case, code)


def check_refusal(
    softhsm: SoftHSM, token: Token, pki: Pki, tmp_path: Path, case: str, code: str
) -> None:
    """Provision under ``case``'s bad input; refused with ``code``, token and log unchanged."""
    log = tmp_path / "made.jsonl"
    env = token_env(softhsm, token)
    ca: Path = pki.factory.path
    select = token_args(token)
    unit = ["--serial", "SN-9"]
    extra: list[str] = []
    if case == "serial_in_log":
        first = tether("factory", "provision", "--ca", ca, "--log", log, *unit, *select, env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        with Pkcs11SecureElement.open(token.module, token.label, token.pin) as element:
            element.delete("SN-9")  # the log alone must refuse the serial
    elif case == "label_in_use":
        with Pkcs11SecureElement.open(token.module, token.label, token.pin) as element:
            element.generate_key("SN-9")
    elif case == "wrong_pin":
        env["TETHER_PKCS11_PIN"] = token.pin + "0"
    elif case == "no_pin":
        del env["TETHER_PKCS11_PIN"]
    elif case == "missing_token":
        select = ["--pkcs11-module", token.module, "--token", "no-such-token"]
    elif case == "missing_module":
        select = ["--pkcs11-module", str(tmp_path / "libmissing.so"), "--token", token.label]
    elif case == "device_ca":
        ca = pki.device.path
    elif case == "invalid_serial":
        unit = ["--serial", "CN=Jane Doe,emailAddress=jane@example.com"]
    elif case == "validity_past_issuer":
        extra = ["--validity-days", "36500"]
    elif case == "no_secure_element":
        select = []
    elif case == "token_and_emulator":
        select = ["--token", token.label, "--emulator", str(tmp_path / "emulator")]
    elif case == "module_without_token":
        select = ["--pkcs11-module", token.module]
    elif case == "neither_serial_nor_count":
        unit = []
    elif case == "bad_prefix":
        unit = ["--count", "2", "--prefix", "bad prefix/"]
    elif case == "serial_and_count":
        unit = ["--serial", "SN-9", "--count", "2"]
    elif case == "count_zero":
        unit = ["--count", "0"]
    elif case == "tpm_not_running":
        with socket.socket() as probe:  # a loopback port nothing listens on once closed
            probe.bind(("127.0.0.1", 0))
            env["TPM2_PKCS11_TCTI"] = f"swtpm:host=127.0.0.1,port={probe.getsockname()[1]}"
    objects_before, labels_before = token_objects(token), token_labels(token)
    log_before = file_state(log)

    result = tether(
        "factory", "provision", "--ca", ca, "--log", log, *unit, *select, *extra, env=env
    )

    refused(result, code)
    assert token_labels(token) == labels_before
    assert token_objects(token) == objects_before
    assert file_state(log) == log_before
    assert not (tmp_path / "emulator").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_batch_of_a_thousand(softhsm: SoftHSM, token: Token, pki: Pki, tmp_path: Path) -> None:
    log = tmp_path / "made.jsonl"
    result = tether(
        "factory", "provision", "--ca", pki.factory.path, "--log", log, "--count", "1000",
        *token_args(token), env=token_env(softhsm, token), timeout=800,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = one_line(result.stdout)
    # The progress bar's final state, then the rate line.
    assert re.search(r"provisioning .*1000/1000", out), out[-2000:]
    rate = re.search(r"made 1000 unit\(s\) in [\d.]+ s \(([\d.]+) units/s\)", out)
    assert rate is not None, out[-2000:]
    assert float(rate.group(1)) > 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 1000
    serials = [r["serial"] for r in records]
    assert serials == [f"TTH-{n:06d}" for n in range(1, 1001)]
    assert len({r["certificate_fingerprint"] for r in records}) == 1000
    with Pkcs11SecureElement.open(token.module, token.label, token.pin) as element:
        labels = element.labels()
        assert labels == sorted(serials)
        # Spot-check: certificates are in the token and match their records.
        for record in (records[0], records[499], records[-1]):
            cert = element.certificate(record["serial"])
            assert isinstance(cert, x509.Certificate)
            assert sha256_fingerprint(cert) == record["certificate_fingerprint"]
    # Every key has its certificate: count the objects as pkcs11-tool lists them.
    listing = token_objects(token)
    assert listing.count("Certificate Object") == 1000
    assert listing.count("Private Key Object") == 1000


def _trust_file(path: Path, *, with_server_ca: bool) -> Path:
    root = RootCA.generate(common_name="Cloud Root")
    server_ca = root.create_issuing_ca(common_name="Cloud Server CA", role=Role.SERVER)
    bundle = ([pem(server_ca.certificate)] if with_server_ca else []) + [pem(root.certificate)]
    path.write_bytes(b"".join(bundle))
    return path


def test_each_unit_gets_its_chain_and_the_trust_file(
    softhsm: SoftHSM, token: Token, pki: Pki, tmp_path: Path
) -> None:
    log, out = tmp_path / "made.jsonl", tmp_path / "handout"
    pinned = _trust_file(tmp_path / "pinned-ca.pem", with_server_ca=True)
    result = tether(
        "factory", "provision", "--ca", pki.factory.path, "--log", log, "--serial", "SN-7",
        "--out", out, "--pinned-ca", pinned, *token_args(token), env=token_env(softhsm, token),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    with Pkcs11SecureElement.open(token.module, token.label, token.pin) as element:
        in_token = element.certificate("SN-7")
    chain = x509.load_pem_x509_certificates((out / "SN-7" / "certificate.pem").read_bytes())
    assert chain == [in_token, pki.factory.certificate]
    assert (out / "SN-7" / "pinned-ca.pem").read_bytes() == pinned.read_bytes()


def test_a_trust_file_without_a_server_ca_is_refused_before_anything_is_made(
    softhsm: SoftHSM, token: Token, pki: Pki, tmp_path: Path
) -> None:
    log = tmp_path / "made.jsonl"
    root_only = _trust_file(tmp_path / "root.pem", with_server_ca=False)
    result = tether(
        "factory", "provision", "--ca", pki.factory.path, "--log", log, "--serial", "SN-8",
        "--pinned-ca", root_only, *token_args(token), env=token_env(softhsm, token),
    )  # fmt: skip
    refused(result, "factory_trust_file_invalid")
    assert token_labels(token) == []
    assert not log.exists()
