"""Shared fixtures. Everything a test needs (keys, CAs, tokens) is made in a temporary
directory by the test run itself; nothing secret is checked in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.softhsm import SoftHSM, Token


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHSM]:
    """One SoftHSM2 configuration for the session (SOFTHSM2_CONF is set for the process)."""
    yield SoftHSM(tmp_path_factory.mktemp("softhsm"))


@pytest.fixture
def token(softhsm: SoftHSM) -> Token:
    """A fresh, empty SoftHSM2 token for one test."""
    return softhsm.new_token()
