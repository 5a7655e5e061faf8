"""A secure element's backing store seen from outside, to show a refusal changed nothing."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from tests.softhsm import Token


def token_objects(token: Token) -> str:
    """Every object in ``token`` as listed by pkcs11-tool (a client this project did not write)."""
    return subprocess.run(
        ["pkcs11-tool", "--module", token.module, "--token-label", token.label,
         "--login", "--pin", token.pin, "--list-objects"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip


def directory_state(directory: Path) -> dict[str, str]:
    """Name -> SHA-256 of every file in ``directory`` (hidden temporaries included)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }
