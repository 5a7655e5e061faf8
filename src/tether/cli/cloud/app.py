"""The ``tether cloud`` Typer group and what its commands share (arguments, JSON output)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tether.errors import InvalidInputError

app = typer.Typer(
    help="Run the cloud: registry, mutual-TLS MQTT 5 gateway, HTTPS admin API. Registry "
    "commands work on this host (DATA) or remotely (--url, or the CLI config file).",
    no_args_is_help=True,
)
admin_app = typer.Typer(help="Admin credentials for the API.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
console = Console(highlight=False)

DATA_HELP = "The cloud's data directory (made by `tether cloud init`); or --url, or the config."
DataDir = Annotated[
    str | None, typer.Argument(metavar="[DATA]", help=DATA_HELP, show_default=False)
]
Json = Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")]


def emit(data: Any, as_json: bool, render: Callable[[], None]) -> None:
    """Print ``data`` (a response model or a list of them) as JSON, or call ``render``."""
    if not as_json:
        render()
        return
    if isinstance(data, list):
        payload: Any = [item.model_dump(mode="json") for item in data]
    else:
        payload = data.model_dump(mode="json")
    typer.echo(json.dumps(payload, indent=2))


def when(value: Any) -> str:
    """A timestamp for a table: ``YYYY-MM-DD HH:MM:SSZ``, or ``-``."""
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M:%SZ}"


def read_file(path: Path) -> bytes:
    """A file a command was given (certificate, CRL); unreadable is ``file_unreadable``."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(
            f"cannot read {path}: {exc.strerror}", code="file_unreadable"
        ) from exc
