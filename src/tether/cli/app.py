"""The root of the ``tether`` command and the one place errors become exit codes.

Each command group lives in its own module under ``tether.cli`` and adds itself with a
``register(root)`` function, so a group can be read (and tested) on its own.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from tether import __version__
from tether.cli import audit, ca, cloud, demo, device, factory, lint, policy
from tether.errors import TetherError

app = typer.Typer(
    name="tether",
    help="Device identity for IoT fleets: CAs, secure elements, mutual TLS, trusted MQTT 5.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for group in (ca, lint, factory, cloud, device, demo, audit, policy):
    group.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tether {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Tether: every device proves who it is, on every connection."""


# Exit codes: 0 success, 1 a finding or refusal the command reports (lint errors, a failed demo
# step), 2 a usage error (Typer's own), 3 a TetherError.
EXIT_TETHER_ERROR = 3


def main() -> None:
    """Entry point: run the app, turning a ``TetherError`` into one line and a non-zero exit.

    Typer (click) handles its own usage errors in standalone mode and exits 2; anything of
    ours that escapes a command is a ``TetherError`` and is shown as one line, never a trace.
    """
    try:
        app()
    except TetherError as exc:
        err = Console(stderr=True, highlight=False)
        err.print(f"[bold red]error[/] [dim]({exc.code})[/]: {exc.message}")
        sys.exit(EXIT_TETHER_ERROR)
