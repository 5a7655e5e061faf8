"""CA keys at rest: encrypted PKCS#8 with PBKDF2-SHA256 (600k) + AES-256-CBC."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import pem as asn1_pem

from tether.errors import AuthenticationError
from tether.pki.errors import WeakPassphraseError, WrongPassphraseError
from tether.pki.keys import (
    PBKDF2_ITERATIONS,
    check_new_passphrase,
    decrypt_private_key,
    encrypt_private_key,
    generate_key,
)


def test_encrypted_key_round_trips_and_names_its_kdf() -> None:
    key = generate_key()
    data = encrypt_private_key(key, "correct horse battery")
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in data
    assert b"BEGIN PRIVATE KEY" not in data
    _, _, der = asn1_pem.unarmor(data)
    info = asn1_keys.EncryptedPrivateKeyInfo.load(der)
    algorithm = info["encryption_algorithm"]
    assert algorithm["algorithm"].native == "pbes2"
    kdf = algorithm["parameters"]["key_derivation_func"]
    assert kdf["algorithm"].native == "pbkdf2"
    assert kdf["parameters"]["iteration_count"].native == PBKDF2_ITERATIONS >= 600_000
    assert kdf["parameters"]["prf"]["algorithm"].native == "sha256"
    assert algorithm["parameters"]["encryption_scheme"]["algorithm"].native == "aes256_cbc"
    opened = decrypt_private_key(data, "correct horse battery")
    assert opened.private_numbers() == key.private_numbers()


def test_wrong_passphrase_is_an_authentication_error() -> None:
    data = encrypt_private_key(generate_key(), "correct horse battery")
    with pytest.raises(WrongPassphraseError) as info:
        decrypt_private_key(data, "wrong horse battery")
    assert isinstance(info.value, AuthenticationError)
    assert "passphrase" in info.value.message


def test_openssl_reads_the_key_with_the_passphrase_only(tmp_path: Path) -> None:
    path = tmp_path / "ca.key.pem"
    path.write_bytes(encrypt_private_key(generate_key(), "correct horse battery"))
    ok = subprocess.run(
        ["openssl", "pkey", "-in", str(path), "-passin", "pass:correct horse battery", "-noout"],
        capture_output=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        ["openssl", "pkey", "-in", str(path), "-passin", "pass:nope", "-noout"],
        capture_output=True,
        timeout=30,
    )
    assert bad.returncode != 0


def test_short_passphrases_are_refused_for_new_keys() -> None:
    with pytest.raises(WeakPassphraseError):
        check_new_passphrase("short")
    check_new_passphrase("long enough")
