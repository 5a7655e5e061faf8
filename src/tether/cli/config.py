"""The CLI's own configuration file: which cloud ``tether cloud ...`` talks to by default.

So DATA is not typed on every command. The file is TOML, looked up in this order:
``--config FILE``, ``$TETHER_CONFIG``, ``$XDG_CONFIG_HOME/tether/cli.toml`` (default
``~/.config/tether/cli.toml``). A missing default file is no error (nothing configured); a
missing file named by ``--config`` or ``$TETHER_CONFIG`` is. It holds either a data directory
(the CLI runs on the cloud host and opens the registry itself) or an API (the CLI runs
anywhere and goes through the admin API)::

    data = "/var/lib/tether/cloud"

    # or
    url = "https://cloud.example.net:8443"
    token_file = "~/.config/tether/admin.token"   # mode 0600; else $TETHER_TOKEN
    ca_file = "~/.config/tether/pinned-ca.pem"    # the cloud's pinned-ca.pem

Relative paths are relative to the file's directory, ``~`` is expanded. The token itself is
never in this file (it would be copied around with it): only the file that holds it. Unknown
keys are refused, so a typo does not silently fall back to another cloud.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tether.errors import ConfigurationError

CONFIG_ENV = "TETHER_CONFIG"
KEYS = frozenset({"data", "url", "token_file", "ca_file"})


@dataclass(frozen=True, slots=True)
class CliConfig:
    """What the config file says (every field optional); ``source`` is the file read."""

    data: Path | None = None
    url: str | None = None
    token_file: Path | None = None
    ca_file: Path | None = None
    source: Path | None = None


def default_path() -> Path:
    """``$XDG_CONFIG_HOME/tether/cli.toml``, else ``~/.config/tether/cli.toml``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tether" / "cli.toml"


def load_config(explicit: Path | None = None) -> CliConfig:
    """The CLI config from ``explicit``, ``$TETHER_CONFIG`` or the default location.

    Raises ConfigurationError (code ``cli_config_invalid``) for a file that is named but
    missing, not TOML, has unknown keys, or both ``data`` and ``url``.
    """
    named = explicit or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    path = named or default_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if named is not None:
            raise _invalid(path, "no such file") from None
        return CliConfig()
    except OSError as exc:
        raise _invalid(path, exc.strerror or str(exc)) from exc
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise _invalid(path, f"not TOML: {exc}") from exc
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise _invalid(
            path, f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(KEYS))}"
        )
    if not all(isinstance(value, str) and value for value in table.values()):
        raise _invalid(path, "every value must be a non-empty string")
    if "data" in table and "url" in table:
        raise _invalid(path, "give data (this host's cloud) or url (its admin API), not both")

    def where(key: str) -> Path | None:
        value = table.get(key)
        return None if value is None else (path.parent / Path(value).expanduser())

    return CliConfig(
        data=where("data"),
        url=table.get("url"),
        token_file=where("token_file"),
        ca_file=where("ca_file"),
        source=path,
    )


def _invalid(path: Path, why: str) -> ConfigurationError:
    return ConfigurationError(f"the CLI config {path}: {why}", code="cli_config_invalid")
