"""The one way tests run the ``tether`` CLI: a real subprocess, as an operator would.

``tether(*args, env=...)`` runs ``python -m tether ARGS`` to completion and returns the
``CompletedProcess`` (text). The environment is the test process's, minus every secret an
outer shell might have exported (each test says exactly which secrets the command gets, in
``env``), plus a wide plain terminal so Rich never wraps or colours a line a test parses.
Standard input is closed: a missing secret fails, it never prompts. ``tether_command`` and
``cli_env`` are the same command and environment for a ``Popen`` that stays running (a test
that reads a ``serve``'s lines as they come adds ``PYTHONUNBUFFERED=1``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

# The variables through which the CLI reads a secret; never inherited by a test's command.
SECRET_VARIABLES = (
    "TETHER_ROOT_PASSPHRASE",
    "TETHER_CA_PASSPHRASE",
    "TETHER_PKCS11_PIN",
    "TETHER_EMULATOR_PASSPHRASE",
)
EXIT_TETHER_ERROR = 3  # a TetherError: one line on stderr with its code (tether.cli.app)


def tether_command(*args: str | Path) -> list[str]:
    """The argv that runs the CLI of this checkout with this interpreter."""
    return [sys.executable, "-m", "tether", *map(str, args)]


def cli_env(extra: Mapping[str, str] | None = None, **more: str) -> dict[str, str]:
    """The test's environment without inherited secrets, wide and plain, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARIABLES}
    env.update(COLUMNS="400", NO_COLOR="1")
    env.update(extra or {})
    env.update(more)
    return env


def tether(
    *args: str | Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``tether ARGS`` to completion; ``env`` adds to (or overrides) ``cli_env()``."""
    return subprocess.run(
        tether_command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(env),
        stdin=subprocess.DEVNULL,
    )
