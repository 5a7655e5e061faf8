"""``tether audit DATA``: the hygiene audit of a cloud's identities (for cron and CI).

Exit status 0 when nothing is found, 1 when something is (like ``tether lint``), 3 for an
error (the registry cannot be read). The live checks read the running gateway's
``/sessions`` on ``metrics.host:metrics.port`` from ``cloud.json``; when the gateway is not
running they are reported as skipped (``--no-live`` skips them on purpose), never passed. The
checks and their codes are described in :mod:`tether.cloud.hygiene`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tether.cloud.hygiene import HygieneOptions, HygieneReport, LiveView, audit
from tether.cloud.observability.live import LiveViewUnavailable, read_live_view
from tether.cloud.registry import Registry
from tether.cloud.settings import CloudSettings
from tether.errors import InvalidInputError

console = Console(highlight=False)


def register(root: typer.Typer) -> None:
    """Add ``tether audit`` to the root app."""
    root.command("audit")(audit_command)


def audit_command(
    data_dir: Path = typer.Argument(..., help="The cloud's data directory."),
    certificate_days: int = typer.Option(30, help="Certificates expiring within N days."),
    ca_days: int = typer.Option(90, help="CAs expiring within N days."),
    unseen_days: int = typer.Option(30, help="Enabled devices not seen for N days."),
    live: bool = typer.Option(
        True, help="Ask the running gateway who is connected (--no-live skips those checks)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Find expiring certificates and CAs, JIT CAs, lost devices, misfit or shared certificates."""
    try:
        options = HygieneOptions(certificate_days, ca_days, unseen_days)
    except ValueError as exc:
        raise InvalidInputError(str(exc), code="audit_option_invalid") from None
    settings = CloudSettings.load(data_dir)
    view: LiveView | None = None
    why = "--no-live was given"
    if live and not settings.metrics.enabled:
        why = "metrics are disabled in cloud.json, so the gateway serves no live view"
    elif live:
        try:
            view = read_live_view(settings.metrics.host, settings.metrics.port)
        except LiveViewUnavailable as exc:
            why = exc.message
    with Registry.open(settings.database_url) as registry:
        report = audit(registry, options, live=view, live_unavailable=why)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print(report)
    if not report.clean:
        raise typer.Exit(1)


def _print(report: HygieneReport) -> None:
    if report.findings:
        table = Table("finding", "subject", "what to do", title="tether audit")
        for finding in report.findings:
            table.add_row(finding.code.value, finding.subject, finding.message)
        console.print(table)
    else:
        console.print("[green]no findings[/]")
    for code, why in report.skipped.items():
        console.print(f"[yellow]skipped[/] {code}: {why}")
