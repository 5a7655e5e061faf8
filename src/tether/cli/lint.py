"""``tether lint CERT [--chain FILE...]``: check certificates against the Tether profile.

Exit status: 0 when no finding is an error, 1 when at least one is (warnings and infos do
not fail), 3 when an input cannot be read at all (a ``TetherError``). ``--json`` prints a
list of ``{"severity", "code", "message", "subject"}`` objects for scripts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tether.pki.files import read_input_file
from tether.pki.lint import lint
from tether.pki.loading import load_certificates

_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


def register(root: typer.Typer) -> None:
    """Add the ``lint`` command to the root app."""
    root.command("lint")(lint_cmd)


def lint_cmd(
    cert_file: Annotated[
        Path, typer.Argument(help="Certificate to check (PEM or DER, <= 64 KiB).")
    ],
    chain: Annotated[
        list[Path] | None,
        typer.Option("--chain", help="Issuer certificate(s): intermediates and root (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print findings as JSON.")] = False,
) -> None:
    """Check a certificate (and its chain) against the Tether profile."""
    certs = load_certificates(read_input_file(cert_file, "certificate"))
    issuers = certs[1:]
    for path in chain or []:
        issuers.extend(load_certificates(read_input_file(path, "chain certificate")))
    findings = lint(certs[0], issuers)
    if as_json:
        typer.echo(json.dumps([f.as_dict() for f in findings], indent=2))
    else:
        out = Console(highlight=False, soft_wrap=True)
        for f in findings:
            out.print(
                f"[{_STYLE[f.severity]}]{f.severity.upper():7}[/] {f.code:28} "
                f"{escape(f.subject)}: {escape(f.message)}"
            )
        errors = sum(f.severity == "error" for f in findings)
        out.print(f"{len(findings)} finding(s), {errors} error(s)" if findings else "clean")
    if any(f.severity == "error" for f in findings):
        raise typer.Exit(1)
