"""The SecureElement contract, run against each backend: a SoftHSM2 token, the emulator, and
(for tests marked ``tpm``) a token on a simulated TPM 2.0."""

from __future__ import annotations

import hashlib

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from tests.secure_element.conftest import EMULATOR_PASSPHRASE, Backend
from tests.support.pki import TestPKI
from tether.errors import ConflictError, InvalidInputError, NotFoundError
from tether.pki.signer import Signer
from tether.secure_element import KeyProtection, SecureElement
from tether.secure_element.base import spki_der
from tether.secure_element.errors import (
    CertificateMismatchError,
    ElementClosedError,
    InvalidDigestError,
    InvalidLabelError,
    KeyNotFoundError,
    LabelInUseError,
)
from tether.secure_element.profiles import profile_for_module

# What each token says it is: SoftHSM2 names itself; tpm2-pkcs11 passes on the TPM's vendor
# and model (swtpm is IBM's software TPM).
TOKEN_MAKERS = {"softhsm2": ("SoftHSM project", "SoftHSM v2"), "tpm2": ("IBM", "SW   TPM")}


def test_is_emulator_says_which_backend(backend: Backend) -> None:
    assert backend.element.is_emulator is (backend.kind == "emulator")
    assert isinstance(backend.element, SecureElement)


@pytest.mark.tpm
def test_generate_key_returns_p256_public_key_that_public_key_reads_back(
    element: SecureElement,
) -> None:
    generated = element.generate_key("device")
    assert isinstance(generated.curve, ec.SECP256R1)
    assert spki_der(element.public_key("device")) == spki_der(generated)
    assert element.labels() == ["device"]


@pytest.mark.tpm
def test_two_keys_are_distinct_and_listed_sorted(element: SecureElement) -> None:
    b = element.generate_key("b-key")
    a = element.generate_key("a-key")
    assert spki_der(a) != spki_der(b)
    assert element.labels() == ["a-key", "b-key"]


@pytest.mark.tpm
def test_sign_digest_verifies_with_the_public_key(element: SecureElement) -> None:
    public = element.generate_key("device")
    digest = hashlib.sha256(b"challenge").digest()
    signature = element.sign_digest("device", digest)
    public.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    with pytest.raises(InvalidSignature):
        public.verify(signature, b"other data", ec.ECDSA(hashes.SHA256()))


def test_signer_satisfies_protocol_and_signs_verifiable_data(element: SecureElement) -> None:
    public = element.generate_key("ca-key")
    signer = element.signer("ca-key")
    assert isinstance(signer, Signer)
    assert spki_der(signer.public_key()) == spki_der(public)
    data = b"to-be-signed certificate bytes" * 10
    signature = signer.sign(data)
    public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    # ECDSA is randomised: two signatures differ and both verify.
    assert signer.sign(data) != signature


def test_store_and_read_certificate(element: SecureElement, pki: TestPKI) -> None:
    public = element.generate_key("device")
    assert element.certificate("device") is None
    cert = pki.device("SN-1", public_key=public).certificate
    element.store_certificate("device", cert)
    assert element.certificate("device") == cert
    assert spki_der(element.certificate("device").public_key()) == spki_der(public)  # type: ignore[union-attr,arg-type]


@pytest.mark.tpm
def test_store_certificate_replaces_the_old_one(element: SecureElement, pki: TestPKI) -> None:
    public = element.generate_key("device")
    element.store_certificate("device", pki.device("SN-1", public_key=public).certificate)
    renewed = pki.device("SN-1", public_key=public).certificate
    element.store_certificate("device", renewed)
    assert element.certificate("device") == renewed
    assert element.labels() == ["device"]


@pytest.mark.tpm
def test_delete_removes_key_and_certificate(element: SecureElement, pki: TestPKI) -> None:
    public = element.generate_key("device")
    element.store_certificate("device", pki.device("SN-1", public_key=public).certificate)
    element.delete("device")
    assert element.labels() == []
    with pytest.raises(KeyNotFoundError):
        element.public_key("device")
    # The label is free again.
    element.generate_key("device")


# -- refusals: each a specific error, and the store is unchanged --------------------------


@pytest.mark.tpm
def test_label_in_use_is_refused_and_changes_nothing(backend: Backend) -> None:
    element = backend.element
    first = element.generate_key("device")
    before = backend.snapshot()
    with pytest.raises(LabelInUseError) as info:
        element.generate_key("device")
    assert isinstance(info.value, ConflictError)
    assert info.value.code == "se_label_in_use"
    assert backend.snapshot() == before
    assert spki_der(element.public_key("device")) == spki_der(first)


@pytest.mark.tpm
def test_mismatching_certificate_is_refused_and_changes_nothing(
    backend: Backend, pki: TestPKI
) -> None:
    element = backend.element
    public = element.generate_key("device")
    good = pki.device("SN-1", public_key=public).certificate
    element.store_certificate("device", good)
    other_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    before = backend.snapshot()
    with pytest.raises(CertificateMismatchError) as info:
        element.store_certificate("device", pki.device("SN-1", public_key=other_key).certificate)
    assert isinstance(info.value, InvalidInputError)
    assert info.value.code == "se_certificate_mismatch"
    assert backend.snapshot() == before
    assert element.certificate("device") == good


@pytest.mark.parametrize(
    "call",
    [
        lambda e: e.public_key("absent"),
        lambda e: e.sign_digest("absent", bytes(32)),
        lambda e: e.signer("absent"),
        lambda e: e.certificate("absent"),
        lambda e: e.delete("absent"),
        lambda e: e.describe_key("absent"),
        lambda e: e.key_protection("absent"),
    ],
    ids=[
        "public_key",
        "sign_digest",
        "signer",
        "certificate",
        "delete",
        "describe_key",
        "key_protection",
    ],
)
def test_absent_label_is_key_not_found(backend: Backend, call: object) -> None:
    backend.element.generate_key("present")
    before = backend.snapshot()
    with pytest.raises(KeyNotFoundError) as info:
        call(backend.element)  # type: ignore[operator]
    assert isinstance(info.value, NotFoundError)
    assert info.value.code == "se_key_not_found"
    assert "absent" in info.value.message
    assert backend.snapshot() == before


def test_store_certificate_for_absent_key_is_refused(backend: Backend, pki: TestPKI) -> None:
    before = backend.snapshot()
    cert = pki.device(
        "SN-1", public_key=ec.generate_private_key(ec.SECP256R1()).public_key()
    ).certificate
    with pytest.raises(KeyNotFoundError):
        backend.element.store_certificate("absent", cert)
    assert backend.snapshot() == before


@pytest.mark.parametrize("label", ["", "-starts-with-dash", "has space", "a/b", "../x", "x" * 65])
def test_invalid_label_is_refused_before_touching_the_store(backend: Backend, label: str) -> None:
    before = backend.snapshot()
    with pytest.raises(InvalidLabelError) as info:
        backend.element.generate_key(label)
    assert info.value.code == "se_invalid_label"
    assert backend.snapshot() == before


@pytest.mark.parametrize("digest", [b"", bytes(31), bytes(33), bytes(64)])
def test_digest_of_wrong_size_is_refused(element: SecureElement, digest: bytes) -> None:
    element.generate_key("device")
    with pytest.raises(InvalidDigestError) as info:
        element.sign_digest("device", digest)
    assert info.value.code == "se_invalid_digest"


def test_closed_element_refuses_use(backend: Backend) -> None:
    backend.element.generate_key("device")
    backend.element.close()
    with pytest.raises(ElementClosedError) as info:
        backend.element.public_key("device")
    assert info.value.code == "se_closed"
    backend.element.close()  # closing twice is harmless


def test_certificate_value_is_an_x509_certificate(element: SecureElement, pki: TestPKI) -> None:
    public = element.generate_key("device")
    element.store_certificate("device", pki.device("SN-7", public_key=public).certificate)
    cert = element.certificate("device")
    assert isinstance(cert, x509.Certificate)
    assert cert.subject.rfc4514_string() == "CN=SN-7"


@pytest.mark.tpm
def test_describe_key_names_the_store_and_no_secret(backend: Backend) -> None:
    backend.element.generate_key("device")
    location = backend.element.describe_key("device")
    if backend.kind == "pkcs11":
        assert backend.token is not None
        assert location.startswith(f"pkcs11:token={backend.token.label};object=device;id=%")
        assert location.endswith(";type=private")
        assert backend.token.pin not in location
    else:
        assert location.startswith("emulator:")
        assert location.endswith("device.key.pem")


@pytest.mark.tpm
def test_key_protection_says_how_the_key_is_kept_and_changes_nothing(backend: Backend) -> None:
    backend.element.generate_key("device")
    before = backend.snapshot()
    protection = backend.element.key_protection("device")
    assert isinstance(protection, KeyProtection)
    assert protection.location == backend.element.describe_key("device")
    assert protection.is_emulator is (backend.kind == "emulator")
    if backend.kind == "pkcs11":
        assert protection.sensitive is True
        assert protection.extractable is False
        assert protection.always_sensitive is True
        assert protection.never_extractable is True
        assert protection.value_read_refused is True
        assert backend.token is not None
        maker = TOKEN_MAKERS[profile_for_module(backend.token.module).name]
        assert (protection.token_manufacturer, protection.token_model) == maker
        assert protection.token_serial
        assert protection.cannot_leave
        assert "sensitive and not extractable" in protection.summary
    else:
        assert protection.sensitive is None and protection.extractable is None
        assert protection.value_read_refused is None and protection.token_model is None
        assert not protection.cannot_leave
        assert "passphrase-encrypted" in protection.summary
        assert "not in a secure element" in protection.summary
        assert EMULATOR_PASSPHRASE not in protection.summary
    assert backend.snapshot() == before
