"""What the ``tether policy`` commands share: the group, the way to a cloud, JSON output.

The way to a cloud is ``tether cloud``'s (``open_cloud`` and ``with_where``: ``--url`` with
``--token-file``/``$TETHER_TOKEN`` and ``--ca-file``, a DATA argument, the CLI config file),
with two additions kept for the scripts written before ``--url`` existed:

- ``--data-dir DIR`` means the same as DATA (giving both is a usage error);
- ``$TETHER_DATA_DIR`` is used when neither DATA, ``--data-dir`` nor ``--url`` is given, before
  the config file (an explicit ``--url`` wins over the environment, as a flag should).

DATA is the first positional, as in ``tether cloud``: a command with N positionals takes N+1
when the first is DATA (:func:`positionals`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from tether.cli.cloud.target import Where, open_cloud
from tether.errors import InvalidInputError, UsageError

if TYPE_CHECKING:
    from tether.cli.cloud.local import LocalCloud
    from tether.cli.cloud.remote import RemoteCloud

DATA_DIR_ENV = "TETHER_DATA_DIR"

app = typer.Typer(
    help="Policies: who may connect, publish, subscribe and receive. On this host (DATA or "
    "--data-dir) or through the admin API (--url), as `tether cloud` chooses.",
    no_args_is_help=True,
)
console = Console(highlight=False)

Data = Annotated[
    str | None,
    typer.Argument(
        metavar="[DATA]",
        help="The cloud's data directory; or --data-dir, --url, $TETHER_DATA_DIR, the config.",
        show_default=False,
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help=f"The cloud's data directory (also ${DATA_DIR_ENV})."),
]
Json = Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")]
Device = Annotated[str | None, typer.Option("--device", help="A device serial.")]
Group = Annotated[str | None, typer.Option("--group", help="A device group.")]
Ca = Annotated[str | None, typer.Option("--ca", help="A registered CA's fingerprint.")]
Service = Annotated[str | None, typer.Option("--service", help="A service name.")]


class TargetChoiceError(InvalidInputError):
    """Exactly one target (or one question) must be named."""

    code = "cli_target_choice"


def one(options: dict[str, str | None], what: str) -> tuple[str, str]:
    """The one option of ``options`` that was given (its name and value)."""
    given = [(k, v) for k, v in options.items() if v is not None]
    if len(given) != 1:
        raise TargetChoiceError(
            f"Give exactly one of {', '.join('--' + k for k in options)} ({what})."
        )
    return given[0]


def positionals(given: Sequence[str | None], names: Sequence[str]) -> tuple[str | None, list[str]]:
    """Split ``[DATA] NAME...``: with one more value than ``names``, the first is DATA.

    ``given`` is every positional slot in order (DATA's first), ``None`` where nothing came.
    """
    values = [value for value in given if value is not None]
    if len(values) == len(names) + 1:
        return values[0], values[1:]
    if len(values) == len(names):
        return None, values
    missing = " ".join(names[len(values) :]) if len(values) < len(names) else ""
    raise UsageError(f"missing {missing}" if missing else "too many arguments")


@contextmanager
def cloud(
    data: str | None, data_dir: Path | None, where: Where
) -> Iterator[LocalCloud | RemoteCloud]:
    """The cloud a command acts on: DATA or ``--data-dir``, then as ``tether cloud`` chooses."""
    if data is not None and data_dir is not None:
        raise UsageError("give DATA or --data-dir, not both (they mean the same)")
    chosen = Path(data) if data is not None else data_dir
    if chosen is None and where.url is None and os.environ.get(DATA_DIR_ENV):
        chosen = Path(os.environ[DATA_DIR_ENV])
    with open_cloud(chosen, where) as found:
        yield found


def emit(data: Any, as_json: bool, render: Callable[[], None]) -> None:
    """Print ``data`` (response models, or the plain lists and maps some routes answer) as
    JSON, or call ``render``."""
    if not as_json:
        render()
        return
    from pydantic_core import to_jsonable_python

    typer.echo(json.dumps(to_jsonable_python(data), indent=2))
