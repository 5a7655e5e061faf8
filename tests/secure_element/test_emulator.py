"""The emulator: encrypted at rest, private file modes, a checked passphrase, says what it is."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.secure_element.conftest import EMULATOR_PASSPHRASE, directory_state
from tests.support.pki import TestPKI
from tether.errors import AuthenticationError, InvalidInputError, StorageError
from tether.secure_element import EMULATOR_LOGGER, EmulatedSecureElement
from tether.secure_element.base import spki_der
from tether.secure_element.errors import EmulatorStoreError, EmulatorWrongPassphraseError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_directory_is_created_private_with_private_files(tmp_path: Path, pki: TestPKI) -> None:
    directory = tmp_path / "nested" / "se"
    with EmulatedSecureElement.open(directory, EMULATOR_PASSPHRASE) as element:
        public = element.generate_key("device")
        element.store_certificate("device", pki.device("SN-1", public_key=public).certificate)
    assert mode(directory) == 0o700
    files = sorted(directory.iterdir())
    assert [p.name for p in files] == ["device.crt.pem", "device.key.pem", "emulator.json"]
    for path in files:
        assert mode(path) == 0o600, path


def test_key_file_is_encrypted_at_rest(tmp_path: Path) -> None:
    directory = tmp_path / "se"
    with EmulatedSecureElement.open(directory, EMULATOR_PASSPHRASE) as element:
        public = element.generate_key("device")
    pem = (directory / "device.key.pem").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):  # cryptography: "Password was not given but key is encrypted"
        serialization.load_pem_private_key(pem, password=None)
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, password=b"wrong passphrase")
    assert EMULATOR_PASSPHRASE.encode() not in pem
    # Only the right passphrase opens it, and it is the key the element reported.
    key = serialization.load_pem_private_key(pem, password=EMULATOR_PASSPHRASE.encode())
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert spki_der(key.public_key()) == spki_der(public)


def test_reopen_with_the_same_passphrase_finds_the_key(tmp_path: Path) -> None:
    directory = tmp_path / "se"
    with EmulatedSecureElement.open(directory, EMULATOR_PASSPHRASE) as element:
        public = element.generate_key("device")
    with EmulatedSecureElement.open(directory, EMULATOR_PASSPHRASE) as element:
        assert element.labels() == ["device"]
        assert spki_der(element.public_key("device")) == spki_der(public)


def test_wrong_passphrase_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "se"
    with EmulatedSecureElement.open(directory, EMULATOR_PASSPHRASE) as element:
        element.generate_key("device")
    before = directory_state(directory)
    with pytest.raises(EmulatorWrongPassphraseError) as info:
        EmulatedSecureElement.open(directory, "not the passphrase")
    assert isinstance(info.value, AuthenticationError)
    assert info.value.code == "se_emulator_wrong_passphrase"
    assert directory_state(directory) == before


def test_wrong_passphrase_is_refused_even_before_any_key_exists(tmp_path: Path) -> None:
    directory = tmp_path / "se"
    EmulatedSecureElement.open(directory, EMULATOR_PASSPHRASE).close()
    with pytest.raises(EmulatorWrongPassphraseError):
        EmulatedSecureElement.open(directory, "not the passphrase")


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as info:
        EmulatedSecureElement.open(tmp_path / "se", "")
    assert info.value.code == "se_emulator_empty_passphrase"
    assert not (tmp_path / "se").exists()


def test_foreign_non_empty_directory_is_refused_untouched(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an emulator")
    before = directory_state(tmp_path)
    with pytest.raises(EmulatorStoreError) as info:
        EmulatedSecureElement.open(tmp_path, EMULATOR_PASSPHRASE)
    assert isinstance(info.value, StorageError)
    assert info.value.code == "se_emulator_store"
    assert directory_state(tmp_path) == before


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "se"
    path.write_text("x")
    with pytest.raises(EmulatorStoreError):
        EmulatedSecureElement.open(path, EMULATOR_PASSPHRASE)


def test_corrupt_verifier_is_a_store_error(tmp_path: Path) -> None:
    directory = tmp_path / "se"
    EmulatedSecureElement.open(directory, EMULATOR_PASSPHRASE).close()
    (directory / "emulator.json").write_text("{not json")
    with pytest.raises(EmulatorStoreError) as info:
        EmulatedSecureElement.open(directory, EMULATOR_PASSPHRASE)
    assert "corrupt" in info.value.message


def test_corrupt_key_file_is_a_store_error(tmp_path: Path) -> None:
    directory = tmp_path / "se"
    with EmulatedSecureElement.open(directory, EMULATOR_PASSPHRASE) as element:
        element.generate_key("device")
    (directory / "device.key.pem").write_bytes(b"garbage")
    with (
        EmulatedSecureElement.open(directory, EMULATOR_PASSPHRASE) as element,
        pytest.raises(EmulatorStoreError),
    ):
        element.sign_digest("device", bytes(32))


def test_every_use_logs_an_emulator_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=EMULATOR_LOGGER)
    with EmulatedSecureElement.open(tmp_path / "se", EMULATOR_PASSPHRASE) as element:
        assert element.is_emulator is True
        element.generate_key("device")
        signer = element.signer("device")
        caplog.clear()
        signer.sign(b"one")
        signer.sign(b"two")
        element.labels()
    records = [r for r in caplog.records if r.name == EMULATOR_LOGGER]
    assert len(records) == 3
    assert all(r.levelno == logging.WARNING for r in records)
    assert all("EMULATED secure element" in r.getMessage() for r in records)
