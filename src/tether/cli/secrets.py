"""Secrets (passphrases, PINs) for the CLI: from an environment variable, a file, or a prompt.

Never from a command-line argument: arguments show up in ``ps`` and shell history. The order
is: an explicit file, then the environment variable, then an interactive prompt (only when
standard input is a terminal; a script without a secret gets a clear error, not a hang).

A database URL is a secret when it carries a password: ``read_database_url`` takes it from a
file or ``TETHER_DATABASE_URL``, and refuses a URL with a password given as an argument (a
URL without one, e.g. PostgreSQL with peer or certificate authentication, may still be).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from tether.errors import ConfigurationError, InvalidInputError, UsageError

MAX_SECRET_FILE_BYTES = 4096
DATABASE_URL_ENV = "TETHER_DATABASE_URL"


class SecretOnCommandLineError(InvalidInputError):
    """A secret (here: a database password) was given as a command-line argument."""

    code = "secret_on_command_line"


def _read_secret_file(what: str, file: Path) -> str:
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


def has_password(url: str) -> bool:
    """True if the database URL carries a password (in its authority or its query string)."""
    # Imported here: SQLAlchemy costs a third of a second, and only ``cloud init`` asks.
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return ":" in url.partition("@")[0].rpartition("//")[2]  # user:pass@ without parsing
    return bool(parsed.password) or any(k.lower() == "password" for k in parsed.query)


def read_database_url(argument: str | None, *, file: Path | None = None) -> str | None:
    """The database URL from ``file``, ``TETHER_DATABASE_URL`` or ``argument``; None if none.

    ``argument`` (a ``--database-url`` option) is refused with SecretOnCommandLineError when
    the URL has a password; giving it together with ``file`` is refused as ambiguous.
    """
    if argument is not None and has_password(argument):
        raise SecretOnCommandLineError(
            "the database URL has a password, and command-line arguments show up in `ps` and "
            "shell history; put the URL in a file (--database-url-file, mode 0600) or in "
            f"{DATABASE_URL_ENV} instead"
        )
    if argument is not None and file is not None:
        raise UsageError("give --database-url or --database-url-file, not both")
    if file is not None:
        return _read_secret_file("database URL", file)
    return argument or os.environ.get(DATABASE_URL_ENV) or None


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
        return _read_secret_file(what, file)
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
