"""PKCS#11 backend against real SoftHSM2 tokens: the key cannot leave, foreign clients agree.

The non-extractability tests talk to the token with their own python-pkcs11 session and
with pkcs11-tool and OpenSSL's pkcs11 engine, not through the code under test.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pkcs11
import pkcs11.exceptions as p11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from tests.secure_element.conftest import token_objects
from tests.softhsm import SoftHSM, Token
from tests.support.pki import TestPKI
from tether.errors import (
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    PolicyViolationError,
    SecureElementError,
)
from tether.secure_element import Pkcs11Config, Pkcs11SecureElement, build_csr
from tether.secure_element.base import spki_der
from tether.secure_element.errors import (
    KeyNotFoundError,
    PinLockedError,
    Pkcs11ModuleError,
    TokenFullError,
    TokenNotFoundError,
    TokenOperationError,
    UnsupportedKeyError,
    WrongPinError,
    map_pkcs11_error,
)
from tether.secure_element.profiles import P256_PARAMS, profile_for_module


def open_element(token: Token) -> Pkcs11SecureElement:
    return Pkcs11SecureElement.open(token.module, token.label, token.pin)


@contextmanager
def raw_session(token: Token) -> Iterator[Any]:
    """A python-pkcs11 session of the test's own, opened while no Tether element is open.

    The module is re-initialised first so that it sees the test's freshly made token.
    """
    lib = pkcs11.lib(token.module)
    lib.reinitialize()
    session = lib.get_token(token_label=token.label).open(user_pin=token.pin, rw=True)
    try:
        yield session
    finally:
        session.close()


def pkcs11_tool(token: Token, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["pkcs11-tool", "--module", token.module, "--token-label", token.label,
         "--login", "--pin", token.pin, *args],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.fixture
def device_key(token: Token, pki: TestPKI) -> ec.EllipticCurvePublicKey:
    """Key 'device' made by Tether in ``token``, with its certificate stored; element closed."""
    with open_element(token) as element:
        public = element.generate_key("device")
        element.store_certificate("device", pki.device("SN-1", public_key=public).certificate)
    return public


# -- the key cannot leave ----------------------------------------------------------------


@pytest.mark.tpm
def test_private_key_attributes_are_sensitive_token_sign_only(
    token: Token, device_key: ec.EllipticCurvePublicKey
) -> None:
    with raw_session(token) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="device")
        assert key[Attribute.KEY_TYPE] == KeyType.EC
        assert key[Attribute.TOKEN] is True
        assert key[Attribute.PRIVATE] is True
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.ALWAYS_SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.SIGN] is True
        assert key[Attribute.UNWRAP] is False
        assert key[Attribute.DERIVE] is False
        # Sign-only on SoftHSM2; a TPM forces CKA_DECRYPT (see tether.secure_element.profiles
        # and test_tpm.py for why the key still cannot be used for anything but ECDSA).
        profile = profile_for_module(token.module)
        assert key[Attribute.DECRYPT] is profile.private_template[Attribute.DECRYPT]
        for attribute, value in profile.private_template.items():
            assert key[attribute] == value, attribute.name
        # Same CKA_ID on key, public key and certificate: the SKI of the public key.
        ski = x509.SubjectKeyIdentifier.from_public_key(device_key).digest
        assert key[Attribute.ID] == ski
        public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label="device")
        assert public[Attribute.ID] == ski
        (cert,) = session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE})
        assert cert[Attribute.ID] == ski
        assert cert[Attribute.LABEL] == "device"


@pytest.mark.tpm
def test_reading_private_value_fails(token: Token, device_key: ec.EllipticCurvePublicKey) -> None:
    with raw_session(token) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="device")
        # SoftHSM2 says "sensitive"; tpm2-pkcs11 has no CKA_VALUE to give for a TPM key at all.
        with pytest.raises((p11.AttributeSensitive, p11.AttributeTypeInvalid)):
            key[Attribute.VALUE]


def test_making_the_key_extractable_or_insensitive_fails(
    token: Token, device_key: ec.EllipticCurvePublicKey
) -> None:
    with raw_session(token) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="device")
        with pytest.raises(p11.PKCS11Error):
            key[Attribute.EXTRACTABLE] = True
        with pytest.raises(p11.PKCS11Error):
            key[Attribute.SENSITIVE] = False
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.SENSITIVE] is True


@pytest.mark.tpm
def test_wrapping_the_key_fails(token: Token, device_key: ec.EllipticCurvePublicKey) -> None:
    """No wrap gets the key out: SoftHSM2 refuses C_WrapKey, tpm2-pkcs11 has no wrapping key.

    tpm2-pkcs11 1.9 implements neither C_GenerateKey nor C_WrapKey: no AES key can be made
    to wrap with, so the refusal comes one step earlier. What keeps a TPM key in the TPM is
    the TPM object itself (fixedTPM, fixedParent), shown in test_tpm.py.
    """
    with raw_session(token) as session:
        key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label="device")
        try:
            wrapping = session.generate_key(KeyType.AES, 256, label="wrapper", store=False)
        except p11.FunctionNotSupported:
            assert profile_for_module(token.module).name == "tpm2"
            return
        with pytest.raises(p11.PKCS11Error) as info:
            wrapping.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        assert isinstance(info.value, p11.KeyUnextractable | p11.KeyNotWrappable)


def private_key_access(token: Token) -> dict[str, str]:
    """Label -> the "Access:" line pkcs11-tool prints for each private key in ``token``."""
    listing = pkcs11_tool(token, "--list-objects", "--type", "privkey").stdout.decode()
    access: dict[str, str] = {}
    label = ""
    for line in listing.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "label":
            label = value.strip()
        elif key == "Access":
            access[label] = value.strip()
    return access


def test_pkcs11_tool_cannot_read_the_private_key(
    token: Token, device_key: ec.EllipticCurvePublicKey, tmp_path: Path
) -> None:
    """pkcs11-tool reports our key as never extractable and cannot read it out.

    A key made extractable on purpose in the same token is the control: pkcs11-tool tells the
    two apart, so the verdict on ours is the tool's, not a constant. (OpenSC 0.23's
    ``--read-object --type privkey`` refuses every private key, so the read attempt alone
    would prove nothing; it is kept as a second, weaker check.)
    """
    with raw_session(token) as session:
        session.generate_keypair(
            KeyType.EC, store=True, label="control",
            public_template={Attribute.EC_PARAMS: P256_PARAMS},
            private_template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
        )  # fmt: skip
    access = private_key_access(token)
    assert "never extractable" not in access["control"]
    assert "sensitive" not in access["control"]
    assert "never extractable" in access["device"]
    assert "always sensitive" in access["device"]

    out = tmp_path / "priv.der"
    pkcs11_tool(token, "--read-object", "--type", "privkey", "--label", "device", "-o", str(out))
    assert not out.exists() or out.stat().st_size == 0


@pytest.mark.tpm
def test_certificate_and_public_key_in_token_match(
    token: Token, device_key: ec.EllipticCurvePublicKey, tmp_path: Path
) -> None:
    cert_file, pub_file = tmp_path / "cert.der", tmp_path / "pub.der"
    pkcs11_tool(token, "--read-object", "--type", "cert", "--label", "device", "-o", str(cert_file))
    pkcs11_tool(
        token, "--read-object", "--type", "pubkey", "--label", "device", "-o", str(pub_file)
    )
    cert = x509.load_der_x509_certificate(cert_file.read_bytes())
    token_public = serialization.load_der_public_key(pub_file.read_bytes())
    assert spki_der(cert.public_key()) == spki_der(token_public) == spki_der(device_key)  # type: ignore[arg-type]


# Not on the TPM: with libp11's engine loaded, tpm2-tss's own OpenSSL calls (the salted
# auth session that unseals the token's wrapping key) fail in that process. awscrt and
# pkcs11-tool are the foreign clients on the TPM.
def test_openssl_pkcs11_engine_signs_with_the_key(
    token: Token, device_key: ec.EllipticCurvePublicKey, tmp_path: Path
) -> None:
    """A foreign client (OpenSSL + libp11) finds the key by token and label and signs."""
    conf = tmp_path / "openssl.cnf"
    conf.write_text(
        "openssl_conf = init\n[init]\nengines = engines\n[engines]\npkcs11 = p11\n"
        f"[p11]\nengine_id = pkcs11\nMODULE_PATH = {token.module}\ninit = 0\n"
    )
    digest = hashlib.sha256(b"handshake transcript").digest()
    (tmp_path / "digest").write_bytes(digest)
    with open_element(token) as element:
        uri = f"{element.describe_key('device')};pin-value={token.pin}"
    result = subprocess.run(
        ["openssl", "pkeyutl", "-engine", "pkcs11", "-keyform", "engine", "-sign",
         "-inkey", uri, "-in", str(tmp_path / "digest"), "-out", str(tmp_path / "sig")],
        capture_output=True, timeout=60, check=False,
        env={**os.environ, "OPENSSL_CONF": str(conf)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    signature = (tmp_path / "sig").read_bytes()
    device_key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


# -- CA keys in a token --------------------------------------------------------------------


@pytest.mark.tpm
def test_token_signer_for_an_existing_ca_key_signs_what_cryptography_verifies(
    token: Token,
) -> None:
    with open_element(token) as element:
        public = element.generate_key("issuing-ca")
    # Later, another process finds the CA key by label and signs a TBS blob with it.
    with open_element(token) as element:
        signer = element.signer("issuing-ca")
        assert spki_der(signer.public_key()) == spki_der(public)
        tbs = b"\x30\x82" + bytes(range(256)) * 4
        public.verify(signer.sign(tbs), tbs, ec.ECDSA(hashes.SHA256()))


@pytest.mark.tpm
def test_second_open_of_the_same_token_shares_the_login(token: Token) -> None:
    first = open_element(token)
    second = open_element(token)
    first.generate_key("device")
    first.close()
    # Closing the first must not log out the second (PKCS#11 logout is per token).
    assert second.labels() == ["device"]
    second.sign_digest("device", bytes(32))
    second.close()


def test_second_open_with_a_different_pin_is_refused(token: Token) -> None:
    with open_element(token), pytest.raises(WrongPinError):
        Pkcs11SecureElement.open(token.module, token.label, "not-the-pin")


def test_config_hides_the_pin_in_repr(token: Token) -> None:
    config = Pkcs11Config(module=token.module, token_label=token.label, pin=token.pin)
    assert token.pin not in repr(config)
    with Pkcs11SecureElement.from_config(config) as element:
        assert element.token_label == token.label
        assert element.is_emulator is False


# -- refusals to open --------------------------------------------------------------------


@pytest.mark.tpm
def test_wrong_pin_is_authentication_error_and_changes_nothing(token: Token) -> None:
    with open_element(token) as element:
        element.generate_key("device")
    before = token_objects(token)
    with pytest.raises(WrongPinError) as info:
        Pkcs11SecureElement.open(token.module, token.label, "0000")
    assert isinstance(info.value, AuthenticationError)
    assert info.value.code == "se_wrong_pin"
    assert token.pin not in info.value.message
    assert token_objects(token) == before


def test_missing_token_is_not_found(softhsm: SoftHSM, token: Token) -> None:
    with pytest.raises(TokenNotFoundError) as info:
        Pkcs11SecureElement.open(softhsm.module, "no-such-token", "1234")
    assert isinstance(info.value, NotFoundError)
    assert info.value.code == "se_token_not_found"
    assert "no-such-token" in info.value.message


@pytest.mark.parametrize("module", ["/nonexistent/libpkcs11.so", "/etc/hostname"])
def test_missing_or_unloadable_module_is_configuration_error(module: str) -> None:
    with pytest.raises(Pkcs11ModuleError) as info:
        Pkcs11SecureElement.open(module, "any", "1234")
    assert isinstance(info.value, ConfigurationError)
    assert info.value.code == "se_module_not_found"
    assert module in info.value.message


def test_token_created_after_module_load_is_found(softhsm: SoftHSM, token: Token) -> None:
    with open_element(token):
        pass
    later = softhsm.new_token()
    with open_element(later) as element:
        assert element.labels() == []


# -- mapping of token errors we cannot provoke on SoftHSM --------------------------------


@pytest.mark.parametrize("exc", [p11.DeviceMemory(), p11.HostMemory()])
def test_out_of_memory_maps_to_token_full(exc: p11.PKCS11Error) -> None:
    error = map_pkcs11_error(exc, "generate key 'x'")
    assert isinstance(error, TokenFullError)
    assert isinstance(error, SecureElementError)
    assert error.code == "se_token_full"
    assert "generate key 'x'" in error.message


@pytest.mark.parametrize("exc", [p11.PinLocked(), p11.PinExpired()])
def test_locked_pin_maps_to_pin_locked(exc: p11.PKCS11Error) -> None:
    error = map_pkcs11_error(exc, "log in")
    assert isinstance(error, PinLockedError)
    assert isinstance(error, AuthenticationError)
    assert error.code == "se_pin_locked"


def test_unknown_token_error_names_the_pkcs11_error() -> None:
    error = map_pkcs11_error(p11.FunctionFailed(), "sign")
    assert isinstance(error, TokenOperationError)
    assert error.code == "se_operation_failed"
    assert "FunctionFailed" in error.message


@pytest.mark.tpm
def test_csr_from_token_key_passes_openssl(token: Token, tmp_path: Path) -> None:
    with open_element(token) as element:
        element.generate_key("device")
        csr = build_csr(element.signer("device"), "SN-0001")
    path = tmp_path / "req.pem"
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    result = subprocess.run(
        ["openssl", "req", "-verify", "-noout", "-in", str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stderr + result.stdout


# -- keys Tether did not make ----------------------------------------------------------------


def test_public_key_falls_back_to_the_certificate_when_no_public_object(
    token: Token, device_key: ec.EllipticCurvePublicKey
) -> None:
    """Some tokens keep only the private half; the certificate then carries the public key."""
    with raw_session(token) as session:
        session.get_key(object_class=ObjectClass.PUBLIC_KEY, label="device").destroy()
    with open_element(token) as element:
        assert spki_der(element.public_key("device")) == spki_der(device_key)
        digest = hashlib.sha256(b"x").digest()
        device_key.verify(
            element.sign_digest("device", digest), digest, ec.ECDSA(Prehashed(hashes.SHA256()))
        )
        element.delete("device")
        assert element.labels() == []


def test_key_with_neither_public_object_nor_certificate_is_not_found(token: Token) -> None:
    with open_element(token) as element:
        element.generate_key("bare")
    with raw_session(token) as session:
        session.get_key(object_class=ObjectClass.PUBLIC_KEY, label="bare").destroy()
    with open_element(token) as element, pytest.raises(KeyNotFoundError) as info:
        element.public_key("bare")
    assert "neither a public key object nor a certificate" in info.value.message


def test_a_non_p256_key_under_the_label_is_refused(token: Token) -> None:
    with raw_session(token) as session:
        session.generate_keypair(
            KeyType.EC, store=True, label="p384",
            public_template={Attribute.EC_PARAMS: encode_named_curve_parameters("secp384r1")},
            private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )  # fmt: skip
    with open_element(token) as element:
        with pytest.raises(UnsupportedKeyError) as info:
            element.sign_digest("p384", bytes(32))
        assert isinstance(info.value, PolicyViolationError)
        with pytest.raises(UnsupportedKeyError):
            element.public_key("p384")


def test_key_protection_reports_an_extractable_key_as_unprotected(token: Token) -> None:
    """The control for ``key_protection``: the flags are the token's, not constants."""
    with raw_session(token) as session:
        session.generate_keypair(
            KeyType.EC, store=True, label="loose",
            public_template={Attribute.EC_PARAMS: P256_PARAMS},
            private_template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True},
        )  # fmt: skip
    with open_element(token) as element:
        protection = element.key_protection("loose")
    assert protection.sensitive is False
    assert protection.extractable is True
    assert protection.never_extractable is False
    assert protection.value_read_refused is False
    assert not protection.cannot_leave
    assert protection.summary.startswith("WARNING")


AWSCRT_FIRST = """
import hashlib, sys
from awscrt import io
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from tether.secure_element import Pkcs11SecureElement

module, label, pin = sys.argv[1:4]
awscrt_lib = io.Pkcs11Lib(file=module)  # C_Initialize by awscrt, before Tether
with Pkcs11SecureElement.open(module, label, pin) as element:
    public = element.generate_key("device")
    public.verify(element.signer("device").sign(b"data"), b"data", ec.ECDSA(hashes.SHA256()))
    print("labels", element.labels())
"""


@pytest.mark.tpm
def test_module_initialised_first_by_awscrt_is_usable(token: Token) -> None:
    """The device stack (awscrt) and the secure element may share one process, in any order."""
    result = subprocess.run(
        [sys.executable, "-c", AWSCRT_FIRST, token.module, token.label, token.pin],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "labels ['device']" in result.stdout
