"""Shared fixtures. Everything a test needs (keys, CAs, tokens) is made in a temporary
directory by the test run itself; nothing secret is checked in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.softhsm import SoftHSM, Token
from tests.support.pki import ceremony
from tests.tpm import Tpm

# Token kinds a test marked ``tpm`` runs on: ``token`` (and the ``backend`` / ``unit_store``
# fixtures of the secure-element and factory suites) are parametrised over them.
TOKEN_KINDS = ("softhsm2", "tpm2")


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHSM]:
    """One SoftHSM2 configuration for the session (SOFTHSM2_CONF is set for the process)."""
    yield SoftHSM(tmp_path_factory.mktemp("softhsm"))


@pytest.fixture(scope="session")
def ca_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Root, server, device and factory CA directories (``tests.support.pki.ceremony``), made
    once a session; tests read them and never change them."""
    return ceremony(tmp_path_factory.mktemp("ceremony"))


@pytest.fixture(scope="session")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tpm]:
    """One simulated TPM (swtpm + tpm2-abrmd + tpm2-pkcs11 store) for the session."""
    started = Tpm(tmp_path_factory.mktemp("tpm"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def tpm_token(tpm: Tpm) -> Iterator[Token]:
    """A fresh, empty tpm2-pkcs11 token on the session's TPM, removed after the test.

    Removed because every process that loads tpm2-pkcs11 opens a TPM connection per token
    in the store, and tpm2-abrmd serves at most 100 connections.
    """
    made = tpm.new_token()
    yield made
    tpm.remove_token(made.label)


@pytest.fixture
def token(request: pytest.FixtureRequest) -> Token:
    """A fresh, empty PKCS#11 token: SoftHSM2, or the TPM for a test marked ``tpm``."""
    kind = getattr(request, "param", "softhsm2")
    if kind == "tpm2":
        return request.getfixturevalue("tpm_token")  # type: ignore[no-any-return]
    softhsm: SoftHSM = request.getfixturevalue("softhsm")
    return softhsm.new_token()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a test marked ``tpm`` on SoftHSM2 and on the TPM (the same test, parametrised).

    ``backend`` and ``unit_store`` (secure-element and factory suites) get a ``tpm2`` kind
    next to their own; anything else that uses ``token`` gets both token kinds. The TPM is
    slower than SoftHSM2, so only representative tests carry the mark.
    """
    marked = metafunc.definition.get_closest_marker("tpm") is not None
    for name in ("backend", "unit_store"):
        if name in metafunc.fixturenames:
            kinds = ["pkcs11", "emulator", "tpm2"] if marked else ["pkcs11", "emulator"]
            metafunc.parametrize(name, kinds, indirect=True)
            return
    if marked and "token" in metafunc.fixturenames:
        metafunc.parametrize("token", TOKEN_KINDS, indirect=True)
