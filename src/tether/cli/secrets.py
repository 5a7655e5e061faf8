"""Secrets (passphrases, PINs) for the CLI: from an environment variable, a file, or a prompt.

Never from a command-line argument: arguments show up in ``ps`` and shell history. The order
is: an explicit file, then the environment variable, then an interactive prompt (only when
standard input is a terminal; a script without a secret gets a clear error, not a hang).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from tether.errors import ConfigurationError

MAX_SECRET_FILE_BYTES = 4096


def read_secret(
    what: str,
    *,
    env_var: str,
    file: Path | None = None,
    confirm: bool = False,
) -> str:
    """Return the secret named ``what`` (e.g. "root key passphrase").

    ``file`` wins over ``env_var``; the file's trailing newline is dropped. With ``confirm``,
    an interactive prompt asks twice (for secrets being set, not used).
    """
    if file is not None:
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"cannot read the {what} file {file}: {exc.strerror}") from exc
        if len(raw) > MAX_SECRET_FILE_BYTES:
            raise ConfigurationError(f"the {what} file {file} is larger than a secret should be")
        value = raw.decode("utf-8", errors="strict").rstrip("\r\n")
        if not value:
            raise ConfigurationError(f"the {what} file {file} is empty")
        return value
    value = os.environ.get(env_var)
    if value:
        return value
    if sys.stdin is not None and sys.stdin.isatty():
        entered: str = typer.prompt(what.capitalize(), hide_input=True, confirmation_prompt=confirm)
        if not entered:
            raise ConfigurationError(f"an empty {what} is not allowed")
        return entered
    raise ConfigurationError(
        f"no {what}: set {env_var}, pass a file with the matching --*-file option, "
        "or run interactively to be prompted"
    )
