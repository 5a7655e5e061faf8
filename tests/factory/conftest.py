"""Fixtures for the factory station tests: a real CA hierarchy on disk and real secure elements.

The CA directories are made once per session with ``tether.pki.store`` (the same layout the
CLI reads); ``unit_store`` is parametrised over a fresh SoftHSM2 token and a fresh emulator
directory, and ``state()`` reads the store from outside (``pkcs11-tool`` for a token, the
files for the emulator) so a refused operation can be shown to have changed nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.softhsm import SoftHSM, Token
from tests.stores import directory_state, token_objects
from tether.pki import Role
from tether.pki.store import CaDirectory, init_issuing, init_root
from tether.secure_element import EmulatedSecureElement, Pkcs11SecureElement, SecureElement

ROOT_PASSPHRASE = "factory test root passphrase"
CA_PASSPHRASE = "factory test CA passphrase"
EMULATOR_PASSPHRASE = "factory test emulator passphrase"


@dataclass(frozen=True)
class Pki:
    """A root, a factory issuing CA and a device-role issuing CA, each in its own directory."""

    root: CaDirectory
    factory: CaDirectory
    device: CaDirectory


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("factory-pki")
    root = init_root(base / "root", ROOT_PASSPHRASE, common_name="Factory Test Root")
    factory = init_issuing(
        base / "factory", root, ROOT_PASSPHRASE, CA_PASSPHRASE,
        common_name="Factory Test Factory CA", role=Role.FACTORY,
    )  # fmt: skip
    device = init_issuing(
        base / "device", root, ROOT_PASSPHRASE, CA_PASSPHRASE,
        common_name="Factory Test Device CA", role=Role.DEVICE,
    )  # fmt: skip
    return Pki(root=root, factory=factory, device=device)


@dataclass
class UnitStore:
    """An open secure element standing in for the units' chips, and its outside view."""

    kind: str
    element: SecureElement
    outside: Callable[[], object]
    token: Token | None = None
    directory: Path | None = None

    def state(self) -> tuple[list[str], object]:
        """The labels the element reports and the store as seen from outside."""
        return self.element.labels(), self.outside()


@pytest.fixture
def unit_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UnitStore]:
    """A fresh, open secure element of each kind; closed after the test."""
    if request.param in ("pkcs11", "tpm2"):
        # "pkcs11" is SoftHSM2; "tpm2" only for tests marked ``tpm`` (see tests/conftest.py).
        token: Token = request.getfixturevalue("tpm_token" if request.param == "tpm2" else "token")
        element: SecureElement = Pkcs11SecureElement.open(token.module, token.label, token.pin)
        store = UnitStore("pkcs11", element, lambda: token_objects(token), token=token)
    else:
        directory = tmp_path / "emulator"
        element = EmulatedSecureElement.open(directory, EMULATOR_PASSPHRASE)
        store = UnitStore(
            "emulator", element, lambda: directory_state(directory), directory=directory
        )
    with element:
        yield store


def file_state(path: Path) -> bytes | None:
    """The bytes of ``path``, or None when it does not exist."""
    return path.read_bytes() if path.exists() else None


def cli_env(softhsm: SoftHSM, **secrets: str) -> dict[str, str]:
    """What a ``tether factory`` command needs beyond ``tests.support.cli``'s environment:
    SoftHSM's configuration and exactly the secrets the test names."""
    return {"SOFTHSM2_CONF": str(softhsm.conf), **secrets}
