"""What only a TPM does: its profile, its own proof that a key cannot leave, its refusals.

The shared contract (generate, sign, CSR, certificate, label in use, wrong PIN, attribute
reads, refused wrap) runs on the TPM through the ``tpm`` mark in the other files; here are
the TPM's differences, against the session's simulated TPM (swtpm + tpm2-abrmd).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pkcs11
import pytest
from pkcs11 import Attribute, ObjectClass

from tests.softhsm import SoftHSM, Token
from tests.stores import token_objects
from tests.tpm import Tpm
from tether.secure_element import Pkcs11Config, Pkcs11SecureElement
from tether.secure_element.errors import TokenFullError, TokenNotFoundError
from tether.secure_element.profiles import (
    GENERIC,
    REQUIRED_PRIVATE,
    SOFTHSM2,
    TPM2,
    TokenProfile,
    profile_for_module,
)

# tpm2-pkcs11's vendor attribute holding the key's TPM2B_PUBLIC (CKA_TPM2_PUB_BLOB).
_PUB_BLOB = "2399141890"


def open_element(token: Token, profile: TokenProfile | None = None) -> Pkcs11SecureElement:
    return Pkcs11SecureElement.from_config(
        Pkcs11Config(token.module, token.label, token.pin, profile=profile)
    )


def test_profile_is_chosen_from_the_module_file(tpm: Tpm, softhsm: SoftHSM) -> None:
    assert profile_for_module(tpm.module) is TPM2
    assert profile_for_module(os.path.realpath(tpm.module)) is TPM2
    assert profile_for_module(softhsm.module) is SOFTHSM2
    assert profile_for_module("/opt/vendor/libvendor-pkcs11.so") is GENERIC
    explicit = Pkcs11Config("/opt/vendor/libvendor-pkcs11.so", "t", "1234", profile=TPM2)
    assert explicit.token_profile is TPM2


def test_every_profile_keeps_the_key_sensitive_and_unextractable() -> None:
    for profile in (SOFTHSM2, TPM2, GENERIC):
        for attribute, value in REQUIRED_PRIVATE.items():
            if attribute is not Attribute.TOKEN:
                assert profile.private_template[attribute] is value
    assert TPM2.forced_private_usages == ("DECRYPT", "VERIFY")
    assert SOFTHSM2.forced_private_usages == ()
    with pytest.raises(ValueError, match="EXTRACTABLE"):
        dataclasses.replace(
            TPM2, private_template={**TPM2.private_template, Attribute.EXTRACTABLE: True}
        )


def _tpm_public_blob(tpm: Tpm, token: Token, label: str) -> bytes:
    """The TPM2B_PUBLIC of the private key ``label``, from tpm2-pkcs11's store (not via Tether)."""
    label_hex = label.encode().hex()
    with sqlite3.connect(tpm.store / "tpm2_pkcs11.sqlite3") as db:
        rows = db.execute(
            "SELECT o.attrs FROM tobjects o JOIN tokens t ON o.tokid = t.id WHERE t.label = ?",
            (token.label,),
        ).fetchall()
    for (attrs,) in rows:
        is_private = re.search(r'\? !!int "0"\s*: !!int "3"', attrs)
        has_label = re.search(rf'\? !!int "3"\s*: !!str "{label_hex}"', attrs)
        blob = re.search(rf'\? !!int "{_PUB_BLOB}"\s*: !!str "([0-9a-f]+)"', attrs)
        if is_private and has_label and blob:
            return bytes.fromhex(blob.group(1))
    raise AssertionError(f"no TPM private key {label!r} in the store")


def test_the_tpm_itself_will_not_let_the_key_go(tpm: Tpm, tpm_token: Token, tmp_path: Path) -> None:
    """The TPM object is fixedTPM + fixedParent + sensitiveDataOrigin: made inside, never
    duplicated out; tpm2_print (tpm2-tools) reads the TPM's own attribute bits."""
    with open_element(tpm_token) as element:
        element.generate_key("device")
    blob = tmp_path / "device.pub"
    blob.write_bytes(_tpm_public_blob(tpm, tpm_token, "device"))
    printed = subprocess.run(
        ["tpm2_print", "-t", "TPM2B_PUBLIC", str(blob)],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    (attributes,) = re.findall(r"attributes:\s*\n\s*value: (\S+)", printed)
    flags = set(attributes.split("|"))
    assert {"fixedtpm", "fixedparent", "sensitivedataorigin", "sign"} <= flags
    # The TPM object is also a decrypt key: why CKA_DECRYPT is forced (see profiles.py).
    assert "decrypt" in flags


def test_the_token_offers_only_ecdsa_with_the_key(tpm_token: Token) -> None:
    """CKA_DECRYPT is true on a TPM key, but its allowed mechanisms are ECDSA only."""
    with open_element(tpm_token) as element:
        element.generate_key("device")
    listing = token_objects(tpm_token)
    private = listing[listing.index("Private Key Object") :]
    (allowed,) = re.findall(r"Allowed mechanisms: (\S+)", private)
    assert set(allowed.split(",")) <= {
        "ECDSA", "ECDSA-SHA1", "ECDSA-SHA256", "ECDSA-SHA384", "ECDSA-SHA512",
    }  # fmt: skip


def test_flags_flipped_behind_tethers_back_are_reported(tpm_token: Token) -> None:
    """tpm2-pkcs11 1.9 lets a logged-in user set CKA_SENSITIVE false (PKCS#11 forbids it).

    The key stays in the TPM (no CKA_VALUE exists for it), and ``key_protection`` reports
    the token's flags as they are, so a tampered key is not passed off as protected.
    """
    with open_element(tpm_token) as element:
        element.generate_key("device")
    lib = pkcs11.lib(tpm_token.module)
    session = lib.get_token(token_label=tpm_token.label).open(user_pin=tpm_token.pin, rw=True)
    try:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="device")
        key[Attribute.SENSITIVE] = False
    finally:
        session.close()
    with open_element(tpm_token) as element:
        protection = element.key_protection("device")
    assert protection.sensitive is False
    assert protection.value_read_refused is True
    assert not protection.cannot_leave
    assert protection.summary.startswith("WARNING")


def test_a_factory_session_holds_more_keys_than_the_tpm_has_slots(tpm_token: Token) -> None:
    """tpm2-pkcs11 keeps each key of a session loaded; the profile's budget reopens the
    session in time, so one open element makes more keys than the resource manager holds."""
    count = 60  # the fixture's tpm2-abrmd holds 100 transient objects: about 50 key pairs
    with open_element(tpm_token) as element:
        for i in range(count):
            public = element.generate_key(f"unit-{i:03d}")
        digest = hashlib.sha256(b"x").digest()
        element.sign_digest("unit-000", digest)
        assert len(element.labels()) == count
        assert element.public_key(f"unit-{count - 1:03d}") == public


def test_full_tpm_is_token_full_and_leaves_nothing_behind(tpm_token: Token) -> None:
    """Without the budget the TPM runs out of object slots (TPM_RC_OBJECT_MEMORY, 0x902)."""
    unbounded = dataclasses.replace(TPM2, keys_per_session=None)
    made: list[str] = []
    with open_element(tpm_token, unbounded) as element:
        for i in range(120):  # bounded: the fixture's abrmd holds about 50 key pairs
            try:
                element.generate_key(f"unit-{i:03d}")
            except TokenFullError as exc:
                assert exc.code == "se_token_full"
                assert "0x902" in exc.message and "tpm2-abrmd" in exc.message
                break
            made.append(f"unit-{i:03d}")
        else:
            raise AssertionError("120 keys in one session and the TPM never ran out")
        assert element.labels() == made
    before = token_objects(tpm_token)
    # Closing the session freed the slots: the default profile carries on.
    with open_element(tpm_token) as element:
        element.generate_key("after")
        element.delete("after")
    assert token_objects(tpm_token) == before


NOT_RUNNING = """
import sys
from tether.secure_element import Pkcs11SecureElement
from tether.errors import TetherError
try:
    Pkcs11SecureElement.open(sys.argv[1], sys.argv[2], sys.argv[3])
except TetherError as exc:
    print(exc.code)
    print(exc.message)
"""


def test_a_tpm_that_is_not_running_is_a_clear_error(tpm: Tpm, tpm_token: Token) -> None:
    """tpm2-pkcs11 cannot reach the TPM: ``TokenNotFoundError`` saying what to check."""
    store = tpm.store / "tpm2_pkcs11.sqlite3"
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]  # nothing listens here once the probe closes
    env = {**os.environ, "TPM2_PKCS11_TCTI": f"swtpm:host=127.0.0.1,port={closed_port}"}
    result = subprocess.run(
        [sys.executable, "-c", NOT_RUNNING, tpm_token.module, tpm_token.label, tpm_token.pin],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    code, message = result.stdout.splitlines()[:2]
    assert code == TokenNotFoundError.code
    assert "could not reach the TPM" in message and "TPM2_PKCS11_TCTI" in message
    assert tpm_token.pin not in message
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before
