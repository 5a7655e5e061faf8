"""``tether demo``: the whole story, told as it runs, on this machine, in about half a minute.

The CLI decides what the domain code may not: where the workspace is, whether SoftHSM2 is
installed (and sets ``SOFTHSM2_CONF`` before anything loads the PKCS#11 module), and how the
results look. The steps themselves are ``tether.demo.Demo``.
"""

from __future__ import annotations

import json
import os
import shutil
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tether.demo import (
    Demo,
    DemoOptions,
    SoftHsmToken,
    StepResult,
    TpmToken,
    find_softhsm_module,
    init_softhsm_token,
    init_tpm_token,
    prepare_workspace,
    write_softhsm_conf,
)
from tether.errors import ConfigurationError

TOTAL_STEPS = 10


class ElementChoice(StrEnum):
    """Which secure element the demo's factory device gets."""

    AUTO = "auto"
    SOFTHSM = "softhsm"
    TPM = "tpm"
    EMULATOR = "emulator"


def _token(choice: ElementChoice, workspace: Path) -> SoftHsmToken | TpmToken | None:
    """A fresh token in the workspace (SoftHSM2 or a simulated TPM), or None for the emulator."""
    if choice is ElementChoice.EMULATOR:
        return None
    if choice is ElementChoice.TPM:
        token = init_tpm_token(workspace / "tpm")
        # tpm2-pkcs11 reads its store and TCTI once, when the module is first loaded in this
        # process (as SoftHSM2 reads SOFTHSM2_CONF): set them before anything loads it.
        os.environ.update(token.tpm.env)
        return token
    module = find_softhsm_module()
    util = shutil.which("softhsm2-util")
    if module is None or util is None:
        if choice is ElementChoice.SOFTHSM:
            raise ConfigurationError(
                "SoftHSM2 is not installed (no libsofthsm2.so or softhsm2-util): install the "
                "Debian package softhsm2, or use --secure-element emulator",
                code="softhsm_not_installed",
            )
        return None
    conf = write_softhsm_conf(workspace / "softhsm")
    # SoftHSM2 reads this once, when the module is first loaded in this process: set it now,
    # before the factory station (python-pkcs11) or the device agent (awscrt) loads it.
    os.environ["SOFTHSM2_CONF"] = str(conf)
    return init_softhsm_token(util, module, conf)


def _render_step(console: Console, result: StepResult) -> None:
    mark = "[green]✓[/]" if result.passed else "[bold red]✗[/]"
    console.print(
        f"[bold]{result.number:>2}. {result.title}[/] [dim]— expect {result.expectation}[/]"
    )
    for line in result.lines:
        console.print(Text("    " + line, style="dim" if not result.passed else ""))
    console.print(f"    {mark} ", Text(result.observed), f"[dim]({result.seconds:.1f} s)[/]")


def _summary(results: list[StepResult]) -> Table:
    table = Table(title="Summary", title_justify="left")
    table.add_column("step", no_wrap=True)
    table.add_column("expectation")
    table.add_column("observed")
    table.add_column("verdict", no_wrap=True)
    for result in results:
        verdict = Text(result.verdict, style="green" if result.passed else "bold red")
        table.add_row(
            f"{result.number}. {result.title}",
            Text(result.expectation),
            Text(result.observed),
            verdict,
        )
    return table


def demo(
    keep: Annotated[
        Path | None,
        typer.Option("--keep", help="Work in this new (or empty) directory and keep it."),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="After the summary, print each result as a JSON line.")
    ] = False,
    secure_element: Annotated[
        ElementChoice,
        typer.Option(
            "--secure-element",
            help="auto: SoftHSM2 when installed, else the software emulator; tpm: a token on "
            "a simulated TPM 2.0 (swtpm + tpm2-abrmd + tpm2-pkcs11).",
        ),
    ] = ElementChoice.AUTO,
) -> None:
    """Run the whole story: CAs, cloud, devices, messages and three refusals; exit 1 on a miss."""
    console = Console(highlight=False, emoji=False)
    workspace = prepare_workspace(keep)
    results: list[StepResult] = []
    token: SoftHsmToken | TpmToken | None = None
    try:
        console.print(
            f"[bold]Tether demo[/] in {workspace} "
            + ("[dim](kept)[/]" if keep is not None else "[dim](removed at the end)[/]")
        )
        token = _token(secure_element, workspace)
        if isinstance(token, TpmToken):
            console.print(
                f"secure element: TPM 2.0 token {token.label!r} ({token.module}) on a SIMULATED "
                "TPM (swtpm + tpm2-abrmd in the workspace); the README says how to use a real one"
            )
        elif token is not None:
            console.print(f"secure element: SoftHSM2 token {token.label!r} ({token.module})")
        else:
            console.print(
                "[bold yellow]secure element: SOFTWARE EMULATOR[/] — SoftHSM2 is not used, so the "
                "factory device's key is a file on this host, not in a secure element"
            )
        runner = Demo(DemoOptions(workspace=workspace, softhsm=token))
        try:
            for result in runner.run():
                results.append(result)
                _render_step(console, result)
        finally:
            runner.close()
    finally:
        if isinstance(token, TpmToken):
            token.tpm.stop()
        if keep is None:
            shutil.rmtree(workspace, ignore_errors=True)
    console.print(_summary(results))
    failed = [r for r in results if not r.passed]
    if json_output:
        for result in results:
            typer.echo(json.dumps(result.to_json()))
        typer.echo(
            json.dumps(
                {
                    "workspace": str(workspace),
                    "kept": keep is not None,
                    "passed": not failed and len(results) == TOTAL_STEPS,
                }
            )
        )
    if failed or len(results) != TOTAL_STEPS:
        names = ", ".join(f"{r.number} ({r.name})" for r in failed)
        console.print(f"[bold red]demo failed[/]: {names}")
        raise typer.Exit(1)
    console.print(f"[bold green]all {TOTAL_STEPS} steps behaved as they should[/]")


def register(root: typer.Typer) -> None:
    """Add the ``demo`` command to the root app."""
    root.command("demo")(demo)
