"""The root of the ``tether`` command and the one place errors become exit codes.

Each command group lives in its own module under ``tether.cli`` and adds itself with a
``register(root)`` function, so a group can be read (and tested) on its own.

Groups load lazily: the root knows each group's name, module and one line of help, and imports
the module only when that command runs (``LazyGroup``). ``tether --version`` and ``tether ca
...`` therefore never import FastAPI, SQLAlchemy or awscrt (``tests/test_cli.py`` checks
``sys.modules``); a command imports what it needs, inside the command where that is heavy.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from tether import __version__
from tether.errors import TetherError, UsageError

# name -> (module with ``register(root)``, one line for ``tether --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "ca": ("tether.cli.ca", "Offline CA ceremony: root, issuing CAs, certificates, CRLs."),
    "lint": ("tether.cli.lint", "Check a certificate or chain against the Tether profile."),
    "factory": ("tether.cli.factory", "The factory station: keys in the secure element."),
    "cloud": ("tether.cli.cloud", "Run and operate the cloud (here, or remotely over its API)."),
    "device": ("tether.cli.device", "The device agent: connect over mutual TLS, MQTT 5."),
    "demo": ("tether.cli.demo", "Run the whole story on loopback and show what happened."),
    "audit": ("tether.cli.audit", "Hygiene audit: expiring, unused, misfit or shared identities."),
    "policy": ("tether.cli.policy", "Policies: write, attach, explain who may do what."),
}


class LazyGroup(TyperGroup):
    """A Typer group whose sub-commands are imported on first use, not at start-up.

    ``tether --help`` lists the groups from ``COMMANDS`` without importing them; running one
    imports its module and asks its ``register`` for the real click command.
    """

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *(name for name in self.commands if name not in COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in COMMANDS:
            return None
        if getattr(ctx, "_tether_listing", False):
            # Listing for --help: a stub with the one-line help, no import.
            return typer.core.TyperCommand(name=cmd_name, help=COMMANDS[cmd_name][1])
        command = load_command(cmd_name)
        self.commands[cmd_name] = command
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        ctx._tether_listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            ctx._tether_listing = False


def load_command(name: str) -> Any:
    """Import the module of command ``name`` and return the click command it registers."""
    module = importlib.import_module(COMMANDS[name][0])
    holder = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    holder.callback()(lambda: None)  # a callback keeps the holder a group, even with one command
    module.register(holder)
    group = typer.main.get_command(holder)
    return group.commands[name]  # type: ignore[attr-defined]


app = typer.Typer(
    name="tether",
    cls=LazyGroup,
    help="Device identity for IoT fleets: CAs, secure elements, mutual TLS, trusted MQTT 5.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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
# step), 2 a usage error (Typer's own, or our ``UsageError`` for option combinations Typer
# cannot express), 3 any other TetherError.
EXIT_USAGE = 2
EXIT_TETHER_ERROR = 3


def main() -> None:
    """Entry point: run the app, turning a ``TetherError`` into one line and a non-zero exit.

    Typer (click) handles its own usage errors in standalone mode and exits 2; anything of
    ours that escapes a command is a ``TetherError`` and is shown as one line, never a trace.
    """
    try:
        app()
    except TetherError as exc:
        from rich.console import Console

        err = Console(stderr=True, highlight=False)
        err.print(f"[bold red]error[/] [dim]({exc.code})[/]: {exc.message}")
        sys.exit(EXIT_USAGE if isinstance(exc, UsageError) else EXIT_TETHER_ERROR)
