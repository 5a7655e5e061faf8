"""The PKCS#11 backend's handle cache: fewer token searches, the same answers.

SoftHSM's file store reads every object on each search, so ``Pkcs11SecureElement`` keeps the
handles it found or made. These tests count the searches a factory unit costs and show that
a change made elsewhere (another element in this process, ``pkcs11-tool`` in another process)
is still seen: the answers are the token's, not a stale cache's.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from tests.secure_element.conftest import token_objects
from tests.softhsm import Token
from tests.support.pki import TestPKI
from tether.secure_element import Pkcs11SecureElement, build_csr
from tether.secure_element.base import spki_der
from tether.secure_element.errors import KeyNotFoundError, LabelInUseError

DIGEST = hashlib.sha256(b"transcript").digest()


def open_element(token: Token) -> Pkcs11SecureElement:
    return Pkcs11SecureElement.open(token.module, token.label, token.pin)


def pkcs11_tool(token: Token, *args: str) -> None:
    """Change the token from another process, behind the back of any open element."""
    subprocess.run(
        ["pkcs11-tool", "--module", token.module, "--token-label", token.label,
         "--login", "--pin", token.pin, *args],
        capture_output=True, timeout=30, check=True,
    )  # fmt: skip


@pytest.fixture
def searches(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[Any, Any]]]:
    """Every object-search template the backend sends to a token, in order (a spy only).

    Every search in ``secure_element.pkcs11`` goes through ``_objects`` (python-pkcs11's session is
    a Cython class and cannot be wrapped), so this counts them all; the token still answers.
    """
    seen: list[dict[Any, Any]] = []
    real = Pkcs11SecureElement._objects

    def counting(self: Pkcs11SecureElement, attrs: dict[Any, Any], action: str) -> list[Any]:
        seen.append(dict(attrs))
        return real(self, attrs, action)

    monkeypatch.setattr(Pkcs11SecureElement, "_objects", counting)
    yield seen


def verifies(public: ec.EllipticCurvePublicKey, signature: bytes) -> bool:
    try:
        public.verify(signature, DIGEST, ec.ECDSA(Prehashed(hashes.SHA256())))
    except Exception:
        return False
    return True


def test_a_factory_unit_costs_one_token_search(
    token: Token, pki: TestPKI, searches: list[dict[Any, Any]]
) -> None:
    """generate, CSR, store certificate, describe: only the "label free?" check searches."""
    with open_element(token) as element:
        element.labels()  # warm up; not part of a unit
        searches.clear()
        public = element.generate_key("SN-1")
        csr = build_csr(element.signer("SN-1"), "SN-1")
        element.store_certificate(
            "SN-1", pki.device("SN-1", public_key=csr.public_key()).certificate
        )  # type: ignore[arg-type]
        uri = element.describe_key("SN-1")
        assert len(searches) == 1
        # What came from the cache is what the token holds.
        assert element.certificate("SN-1") is not None
    assert "id=%" in uri
    with open_element(token) as fresh:
        assert spki_der(fresh.public_key("SN-1")) == spki_der(public)
        cert = fresh.certificate("SN-1")
        assert cert is not None
        assert spki_der(cert.public_key()) == spki_der(public)  # type: ignore[arg-type]
        assert fresh.describe_key("SN-1") == uri


def test_an_existing_key_is_searched_for_once(token: Token, searches: list[dict[Any, Any]]) -> None:
    with open_element(token) as element:
        public = element.generate_key("ca")
    with open_element(token) as element:
        searches.clear()
        signer = element.signer("ca")
        signatures = [element.sign_digest("ca", DIGEST) for _ in range(3)]
        assert spki_der(signer.public_key()) == spki_der(public)
        assert len(searches) == 1
    assert all(verifies(public, signature) for signature in signatures)


def test_key_removed_by_another_process_is_not_found(token: Token) -> None:
    with open_element(token) as element:
        element.generate_key("gone")
        element.sign_digest("gone", DIGEST)  # the handle is cached now
        pkcs11_tool(token, "--delete-object", "--type", "privkey", "--label", "gone")
        with pytest.raises(KeyNotFoundError):
            element.sign_digest("gone", DIGEST)
        with pytest.raises(KeyNotFoundError):
            element.signer("gone")


def test_delete_through_one_element_is_seen_by_another(token: Token) -> None:
    first, second = open_element(token), open_element(token)
    with first, second:
        first.generate_key("shared")
        second.sign_digest("shared", DIGEST)
        first.delete("shared")
        with pytest.raises(KeyNotFoundError):
            second.sign_digest("shared", DIGEST)
        with pytest.raises(KeyNotFoundError):
            second.describe_key("shared")
        assert second.labels() == []


def test_a_label_made_again_after_delete_uses_the_new_key(token: Token) -> None:
    with open_element(token) as element:
        old = element.generate_key("again")
        element.delete("again")
        new = element.generate_key("again")
        signature = element.sign_digest("again", DIGEST)
        assert spki_der(element.public_key("again")) == spki_der(new)
    assert verifies(new, signature)
    assert not verifies(old, signature)


def test_label_taken_by_another_process_is_refused_and_changes_nothing(token: Token) -> None:
    """The "label free?" check asks the token, so an object made elsewhere counts."""
    with open_element(token) as element:
        element.generate_key("mine")
        pkcs11_tool(token, "--keypairgen", "--key-type", "EC:prime256v1", "--label", "theirs")
        before = token_objects(token)
        with pytest.raises(LabelInUseError):
            element.generate_key("theirs")
        assert token_objects(token) == before
        assert element.labels() == ["mine", "theirs"]


def test_certificate_removed_by_another_process_is_replaced_cleanly(
    token: Token, pki: TestPKI
) -> None:
    with open_element(token) as element:
        public = element.generate_key("dev")
        element.store_certificate("dev", pki.device("SN-1", public_key=public).certificate)
        pkcs11_tool(token, "--delete-object", "--type", "cert", "--label", "dev")
        element.store_certificate("dev", pki.device("SN-2", public_key=public).certificate)
        cert = element.certificate("dev")
    assert cert is not None
    assert token_objects(token).count("Certificate Object") == 1
    with open_element(token) as fresh:
        stored = fresh.certificate("dev")
    assert stored is not None
    assert stored.serial_number == cert.serial_number
