"""Real SoftHSM2 tokens for tests, made in a temporary directory by the test run.

SoftHSM reads ``SOFTHSM2_CONF`` when a process first initialises the library, so one
configuration (one token directory) serves the whole pytest session; each test asks for its
own token with a fresh label. Subprocesses (openssl, awscrt, ``tether``) inherit the same
environment and see the same tokens.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)


def softhsm_module() -> str:
    """The SoftHSM2 PKCS#11 module; fails loudly when the package is missing."""
    for candidate in MODULE_CANDIDATES:
        if os.path.exists(candidate):
            return candidate
    raise RuntimeError(
        "SoftHSM2 is not installed: run ./scripts/install-system-deps (Debian package softhsm2)"
    )


@dataclass(frozen=True)
class Token:
    """An initialised token: its label, user PIN and SO PIN, and the module that serves it."""

    module: str
    label: str
    pin: str
    so_pin: str


class SoftHSM:
    """A SoftHSM2 configuration in ``root``; ``new_token()`` initialises another token."""

    def __init__(self, root: Path) -> None:
        if shutil.which("softhsm2-util") is None:
            raise RuntimeError("softhsm2-util is missing: run ./scripts/install-system-deps")
        self.module = softhsm_module()
        self.root = root
        tokens = root / "tokens"
        tokens.mkdir(parents=True, exist_ok=True)
        self.conf = root / "softhsm2.conf"
        self.conf.write_text(
            f"directories.tokendir = {tokens}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n"
        )
        os.environ["SOFTHSM2_CONF"] = str(self.conf)

    def new_token(self, label: str | None = None, pin: str | None = None) -> Token:
        """Initialise a fresh token in the next free slot."""
        label = label or f"test-{secrets.token_hex(4)}"
        pin = pin or secrets.token_hex(8)
        so_pin = secrets.token_hex(8)
        subprocess.run(
            [
                "softhsm2-util", "--init-token", "--free", "--label", label,
                "--pin", pin, "--so-pin", so_pin,
            ],
            check=True, capture_output=True, env={**os.environ, "SOFTHSM2_CONF": str(self.conf)},
        )  # fmt: skip
        return Token(module=self.module, label=label, pin=pin, so_pin=so_pin)
