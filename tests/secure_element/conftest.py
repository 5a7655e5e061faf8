"""Fixtures for the secure element tests: real SoftHSM2 tokens and real emulator directories.

``element`` is parametrised over both backends so that one behavioural test proves both;
``snapshot`` reads the backing store from outside (``pkcs11-tool`` for a token, the files for
the emulator) to show that a refused operation changed nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.softhsm import Token
from tests.stores import directory_state, token_objects
from tests.support.pki import TestPKI
from tether.secure_element import EmulatedSecureElement, Pkcs11SecureElement, SecureElement

EMULATOR_PASSPHRASE = "correct horse battery staple"


@dataclass
class Backend:
    """One opened secure element plus a way to look at its store from outside."""

    kind: str
    element: SecureElement
    snapshot: Callable[[], object]
    token: Token | None = None
    directory: Path | None = None


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """An open, empty secure element of each kind; closed after the test."""
    if request.param in ("pkcs11", "tpm2"):
        # "pkcs11" is SoftHSM2; "tpm2" only for tests marked ``tpm`` (see tests/conftest.py).
        token: Token = request.getfixturevalue("tpm_token" if request.param == "tpm2" else "token")
        element: SecureElement = Pkcs11SecureElement.open(token.module, token.label, token.pin)
        result = Backend("pkcs11", element, lambda: token_objects(token), token=token)
    else:
        directory = tmp_path / "se"
        element = EmulatedSecureElement.open(directory, EMULATOR_PASSPHRASE)
        result = Backend(
            "emulator", element, lambda: directory_state(directory), directory=directory
        )
    with element:
        yield result


@pytest.fixture
def element(backend: Backend) -> SecureElement:
    return backend.element


@pytest.fixture(scope="session")
def pki() -> TestPKI:
    """The issuer of the device certificates the elements store (made once a session)."""
    return TestPKI("Tether SE Test Root")
