"""Which cloud a ``tether cloud`` command talks to: this host's data directory, or an admin API.

Every registry command takes the same way in, in this order:

1. ``--url URL`` (the admin API), with ``--token-file FILE`` (else ``$TETHER_TOKEN``, else the
   config's ``token_file``, else a prompt at a terminal) and ``--ca-file PINNED`` (the cloud's
   ``pinned-ca.pem``, else the config's ``ca_file``): the API's certificate is verified against
   that file alone, never the system store;
2. a DATA argument: the cloud's data directory on this host (the registry is opened directly,
   writes go through the same admin service the API uses);
3. the CLI config file (:mod:`tether.cli.config`): its ``data``, or its ``url``.

Both sides return the API's response models (``tether.cloud.api.schemas``), so a command
prints the same table and the same ``--json`` whichever way it went. A refusal from the API
comes back as a TetherError with the API's code and message (exit 3, one line).

Heavy imports (SQLAlchemy through the registry, httpx) happen inside the functions that
need them, so the CLI starts quickly (``tether.cli.app``).
"""

from __future__ import annotations

import functools
import getpass
import inspect
import os
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from tether.cli.config import CliConfig, load_config
from tether.cli.secrets import read_secret
from tether.errors import ConfigurationError, TetherError, UsageError

if TYPE_CHECKING:
    from tether.cli.cloud.local import LocalCloud
    from tether.cli.cloud.remote import RemoteCloud

TOKEN_ENV = "TETHER_TOKEN"  # noqa: S105  (the variable's name, not a token)
F = TypeVar("F", bound=Callable[..., Any])


class RemoteError(TetherError):
    """The admin API refused the request; ``code`` and ``message`` are the API's own."""

    code = "api_refused"


@dataclass(frozen=True, slots=True)
class Where:
    """The ``--url``, ``--token-file``, ``--ca-file`` and ``--config`` options of a command."""

    url: str | None = None
    token_file: Path | None = None
    ca_file: Path | None = None
    config: Path | None = None


_WHERE = (
    ("url", str, typer.Option("--url", help="The admin API (https://HOST:8443) instead of DATA.")),
    (
        "token_file",
        Path,
        typer.Option(
            "--token-file", help=f"File with the admin token for --url (else ${TOKEN_ENV})."
        ),
    ),
    (
        "ca_file",
        Path,
        typer.Option("--ca-file", help="The cloud's pinned-ca.pem: the only CA --url trusts."),
    ),
    (
        "config",
        Path,
        typer.Option(
            "--config", help="CLI config file (default ~/.config/tether/cli.toml, $TETHER_CONFIG)."
        ),
    ),
)


def with_where(fn: F) -> F:
    """Give a command the ``--url``/``--token-file``/``--ca-file``/``--config`` options.

    The command declares a keyword parameter ``where: Where``; Typer sees the four options
    instead, and the command receives them as one ``Where``.
    """
    signature = inspect.signature(fn, eval_str=True)
    kept = [p for p in signature.parameters.values() if p.name != "where"]
    added = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[kind | None, option],  # type: ignore[valid-type]
        )
        for name, kind, option in _WHERE
    ]

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        where = Where(**{name: kwargs.pop(name) for name, _, _ in _WHERE})
        return fn(*args, where=where, **kwargs)

    parameters = [*kept, *added]
    command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    return command  # type: ignore[return-value]


def actor() -> str:
    """The audit log's actor for a command run on the cloud host."""
    return f"cli:{getpass.getuser()}"


def shift(first: str | None, second: str | None, what: str) -> tuple[Path | None, str]:
    """Split ``[DATA] VALUE`` positionals: with one given, it is the VALUE (named ``what``)."""
    if second is not None:
        return (None if first is None else Path(first)), second
    if first is None:
        raise UsageError(f"missing {what}")
    return None, first


@contextmanager
def open_cloud(data_dir: Path | None, where: Where) -> Iterator[LocalCloud | RemoteCloud]:
    """The cloud a command acts on (see the module docstring for the order)."""
    config = load_config(where.config)
    if where.url is not None and data_dir is not None:
        raise UsageError("give DATA (this host's cloud) or --url (its admin API), not both")
    url = where.url if data_dir is None else None
    if url is None and data_dir is None:
        data_dir = config.data
        url = config.url if data_dir is None else None
    if url is not None:
        from tether.cli.cloud.remote import RemoteCloud

        with RemoteCloud(url, token=_token(where, config), ca_file=_ca_file(where, config)) as c:
            yield c
        return
    if data_dir is None:
        raise UsageError(
            "which cloud? give its data directory (DATA), --url with --token-file and "
            "--ca-file, or set data or url in the CLI config (~/.config/tether/cli.toml)"
        )
    from tether.cli.cloud.local import LocalCloud

    with LocalCloud(data_dir, actor=actor()) as local:
        yield local


def local_only(data_dir: Path | None, where: Where, command: str) -> Path:
    """The data directory for a command that only runs on the cloud host (init, serve, ...)."""
    if where.url is not None:
        raise UsageError(f"`tether cloud {command}` runs on the cloud host: give DATA, not --url")
    if data_dir is not None:
        return data_dir
    config = load_config(where.config)
    if config.data is None:
        raise UsageError(f"`tether cloud {command}` needs the cloud's data directory (DATA)")
    return config.data


def _token(where: Where, config: CliConfig) -> str:
    file = where.token_file
    if file is None and not os.environ.get(TOKEN_ENV):
        file = config.token_file
    return read_secret("admin token", env_var=TOKEN_ENV, file=file)


def _ca_file(where: Where, config: CliConfig) -> Path:
    path = where.ca_file or config.ca_file
    if path is None:
        raise UsageError(
            "--url needs --ca-file: the cloud's pinned-ca.pem (its server CA and root), so the "
            "admin API is verified against it alone"
        )
    return path


def pinned_context(ca_file: Path) -> ssl.SSLContext:
    """A TLS client context that trusts only the CAs in ``ca_file``."""
    # PROTOCOL_TLS_CLIENT checks the host name and the chain, and loads no system CAs.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot read the pinned CA file {ca_file}: {exc}", code="cli_ca_file_invalid"
        ) from exc
    return context
