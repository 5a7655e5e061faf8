"""The SoftHSM2 fixture makes real tokens that the PKCS#11 module lists."""

from __future__ import annotations

import subprocess

from tests.softhsm import Token


def test_token_is_listed_by_pkcs11_tool(token: Token) -> None:
    out = subprocess.run(
        ["pkcs11-tool", "--module", token.module, "--list-token-slots"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert token.label in out
