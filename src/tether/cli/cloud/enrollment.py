"""``tether cloud claim create|list``, ``tether cloud enrollment-token create`` and ``tether
cloud renew-now``: enrollment's admin writes, here (DATA) or through the admin API (``--url``).

A claim certificate and (without ``--csr``) its key, and a one-time token, are printed once,
plainly, for a script or a file; the registry keeps neither key nor token. On the cloud host
``claim create`` opens the online device CA (``api.device_ca``) for the one signature, with
its passphrase from ``--device-ca-passphrase-file`` or ``TETHER_CA_PASSPHRASE``, as ``serve``
does; through the API the API's process signs. ``--valid-for`` is in hours, bounded by the
admin service (``valid_for_invalid``) whichever way the command goes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tether.cli.cloud.app import DataDir, Json, app, console, emit, read_file, when
from tether.cli.cloud.target import Where, open_cloud, shift, with_where
from tether.cli.secrets import read_secret

claim_app = typer.Typer(help="Claim certificates: a batch's shared birth identity.")
token_app = typer.Typer(help="One-time enrollment tokens, one serial each.")
app.add_typer(claim_app, name="claim", no_args_is_help=True)
app.add_typer(token_app, name="enrollment-token", no_args_is_help=True)

SerialArg = Annotated[str | None, typer.Argument(metavar="SERIAL", show_default=False)]


def _hours(what: str) -> Any:
    return typer.Option("--valid-for", help=f"Hours {what} stays valid.")


@claim_app.command("create")
@with_where
def claim_create(
    data_dir: DataDir = None,
    name: Annotated[str | None, typer.Argument(metavar="NAME", show_default=False)] = None,
    serial: Annotated[
        list[str] | None,
        typer.Option("--serial", help="A serial the claim may enroll (repeat); default any."),
    ] = None,
    max_enrollments: Annotated[
        int | None, typer.Option("--max-enrollments", help="At most this many enrollments.")
    ] = None,
    valid_for: Annotated[int, _hours("the claim certificate")] = 720,
    csr: Annotated[
        Path | None, typer.Option("--csr", help="The claim key's CSR (else the cloud makes one).")
    ] = None,
    device_ca_passphrase_file: Annotated[
        Path | None,
        typer.Option(
            help="File with the online device CA's passphrase (else TETHER_CA_PASSPHRASE)."
        ),
    ] = None,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """Make a claim (CN=claim.NAME) for a batch; its certificate, and its key once."""
    data, claim_name = shift(data_dir, name, "NAME")
    csr_pem = None if csr is None else read_file(csr)

    def passphrase() -> str:
        return read_secret(
            "online device CA passphrase",
            env_var="TETHER_CA_PASSPHRASE",
            file=device_ca_passphrase_file,
        )

    with open_cloud(data, where) as cloud:
        made = cloud.create_claim(
            claim_name,
            serials=serial or None,
            max_enrollments=max_enrollments,
            valid_for=valid_for,
            csr_pem=csr_pem,
            passphrase=passphrase,
        )

    def render() -> None:
        claim = made.claim
        console.print(f"claim {claim.name!r} until {when(claim.expires_at)}")
        if made.key_escrow_warning:
            console.print(f"  [yellow]warning:[/] {made.key_escrow_warning}")
        # Plain print, no markup: the PEM must come out exactly, for a file or a script.
        typer.echo(made.certificate_pem, nl=False)
        if made.private_key_pem:
            typer.echo(made.private_key_pem, nl=False)

    emit(made, as_json, render)


@claim_app.command("list")
@with_where
def claim_list(data_dir: DataDir = None, as_json: Json = False, *, where: Where) -> None:
    """List the claims: which serials (or how many), enrollments so far, expiry."""
    with open_cloud(None if data_dir is None else Path(data_dir), where) as cloud:
        found = cloud.claims()

    def render() -> None:
        for claim in found:
            scope = "any serial" if claim.serials is None else f"{len(claim.serials)} serials"
            most = "" if claim.max_enrollments is None else f" of {claim.max_enrollments}"
            console.print(
                f"{claim.name}  {scope}  {claim.enrollments}{most} enrolled  "
                f"until {when(claim.expires_at)}"
            )

    emit(found, as_json, render)


@token_app.command("create")
@with_where
def token_create(
    data_dir: DataDir = None,
    serial: SerialArg = None,
    valid_for: Annotated[int, _hours("the token")] = 168,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """A one-time token that enrolls SERIAL once; printed once, only its hash is kept."""
    data, which = shift(data_dir, serial, "SERIAL")
    with open_cloud(data, where) as cloud:
        issued = cloud.create_enrollment_token(which, valid_for=valid_for)

    def render() -> None:
        console.print(
            f"  enrollment token for {issued.serial} until {when(issued.expires_at)} "
            "(shown once, only its hash is kept):"
        )
        typer.echo(issued.token)

    emit(issued, as_json, render)


@app.command("renew-now")
@with_where
def renew_now(
    data_dir: DataDir = None, serial: SerialArg = None, as_json: Json = False, *, where: Where
) -> None:
    """Ask a device to renew its certificate now (pushed to its live session; audited)."""
    data, which = shift(data_dir, serial, "SERIAL")
    with open_cloud(data, where) as cloud:
        done = cloud.renew_now(which)
    emit(done, as_json, lambda: console.print(f"renewal requested of {done.serial}"))
