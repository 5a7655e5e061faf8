"""``tether cloud cas|register-ca|registration-code|deactivate-ca|activate-ca|publish-crl``.

On the cloud host (DATA) ``register-ca`` trusts the CA on the operator's word, as ``cloud
init`` does for the online CA. Through the API (``--url``) the CA's owner proves possession
of its key, as the API requires: ``--ca-dir DIR`` signs a verification certificate with the
CA key on the spot (its passphrase from ``--ca-passphrase-file`` or TETHER_CA_PASSPHRASE), or
``--verification-cert FILE --code CODE`` uploads one made earlier on the ceremony host from a
``tether cloud registration-code``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tether.cli.cloud.app import DataDir, Json, app, console, emit, read_file, when
from tether.cli.cloud.target import Where, open_cloud, shift, with_where
from tether.cli.secrets import read_secret
from tether.cloud.registry.records import CARole, CAStatus
from tether.errors import UsageError


@app.command()
@with_where
def cas(
    data_dir: DataDir = None,
    status: Annotated[CAStatus | None, typer.Option(help="Only CAs in this state.")] = None,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """List the registered CAs (oldest first): role, state, JIT, validity, CRL path."""
    with open_cloud(None if data_dir is None else Path(data_dir), where) as cloud:
        found = cloud.cas(status)

    def render() -> None:
        table = Table("fingerprint", "subject", "role", "status", "jit", "not after")
        for ca in found:
            state = ca.status if ca.status == "active" else f"[red]{ca.status}[/]"
            jit = "yes" if ca.allow_auto_registration else "no"
            table.add_row(ca.fingerprint, ca.subject, ca.role, state, jit, when(ca.not_after))
        console.print(table)

    emit(found, as_json, render)


def _set_ca(data_dir: str | None, fingerprint: str | None, where: Where, status: CAStatus) -> None:
    data, fp = shift(data_dir, fingerprint, "FINGERPRINT")
    with open_cloud(data, where) as cloud:
        record = cloud.set_ca_status(fp.lower(), status)
    console.print(f"CA {record.fingerprint} is {record.status}", soft_wrap=True)


FingerprintArg = Annotated[str | None, typer.Argument(metavar="FINGERPRINT", show_default=False)]


@app.command("deactivate-ca")
@with_where
def deactivate_ca(
    data_dir: DataDir = None, fingerprint: FingerprintArg = None, *, where: Where
) -> None:
    """Deactivate a CA: every device under it is cut at once (reversible: activate-ca)."""
    _set_ca(data_dir, fingerprint, where, CAStatus.INACTIVE)


@app.command("activate-ca")
@with_where
def activate_ca(
    data_dir: DataDir = None, fingerprint: FingerprintArg = None, *, where: Where
) -> None:
    """Activate a deactivated CA again."""
    _set_ca(data_dir, fingerprint, where, CAStatus.ACTIVE)


@app.command("registration-code")
@with_where
def registration_code(data_dir: DataDir = None, as_json: Json = False, *, where: Where) -> None:
    """A single-use code for registering a CA through the API (sign it with
    `tether ca verification-cert`, then `register-ca --verification-cert F --code C`)."""
    with open_cloud(None if data_dir is None else Path(data_dir), where) as cloud:
        code = cloud.registration_code()
    emit(code, as_json, lambda: typer.echo(code.code))


@app.command("register-ca")
@with_where
def register_ca(
    data_dir: DataDir = None,
    certificate: Annotated[
        str | None,
        typer.Argument(metavar="CERT", help="The CA certificate (PEM or DER).", show_default=False),
    ] = None,
    role: Annotated[
        CARole | None, typer.Option(help="What the CA issues: device, factory or service.")
    ] = None,
    allow_jit: Annotated[
        bool,
        typer.Option(
            "--allow-jit", help="Register unknown devices under this CA on first connect."
        ),
    ] = False,
    ca_dir: Annotated[
        Path | None, typer.Option(help="With --url: the CA's directory, to prove its key.")
    ] = None,
    ca_passphrase_file: Annotated[
        Path | None,
        typer.Option(help="File with --ca-dir's passphrase (else TETHER_CA_PASSPHRASE)."),
    ] = None,
    verification_cert: Annotated[
        Path | None, typer.Option(help="With --url: a verification certificate made earlier.")
    ] = None,
    code: Annotated[
        str | None, typer.Option(help="The registration code --verification-cert carries.")
    ] = None,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """Trust a CA for client certificates (device, factory or service)."""
    if role is None:
        raise UsageError("missing --role (device, factory or service)")
    if (verification_cert is None) != (code is None):
        raise UsageError("--verification-cert and --code go together")
    if verification_cert is not None and ca_dir is not None:
        raise UsageError("give --ca-dir or --verification-cert with --code, not both")
    data, file = shift(data_dir, certificate, "CERT")
    pem = read_file(Path(file))
    prove = None
    if ca_dir is not None:
        prove = _prover(ca_dir, ca_passphrase_file)
    with open_cloud(data, where) as cloud:
        if verification_cert is not None and code is not None and cloud.remote:
            record = cloud.register_ca_with_proof(  # type: ignore[union-attr]
                pem, read_file(verification_cert), code, role, allow_jit
            )
        else:
            record = cloud.register_ca(pem, role=role, allow_jit=allow_jit, prove=prove)

    def render() -> None:
        console.print(f"[green]registered[/] {record.subject} as {record.role} CA")
        console.print(f"  fingerprint {record.fingerprint}", soft_wrap=True)

    emit(record, as_json, render)


def _prover(ca_dir: Path, passphrase_file: Path | None) -> Callable[[str], bytes]:
    """Sign a verification certificate for a code with the key in ``ca_dir`` (asked lazily)."""
    from tether.pki.store import CaDirectory, pem
    from tether.pki.verification import issue_verification_certificate

    directory = CaDirectory.open(ca_dir)

    def prove(code: str) -> bytes:
        passphrase = read_secret(
            "CA key passphrase", env_var="TETHER_CA_PASSPHRASE", file=passphrase_file
        )
        signer = directory.signer(passphrase)
        return pem(issue_verification_certificate(directory.certificate, signer, code))

    return prove


@app.command("publish-crl")
@with_where
def publish_crl(
    data_dir: DataDir = None,
    crl: Annotated[
        str | None,
        typer.Argument(
            metavar="CRL", help="The CRL (PEM or DER) the CA signed.", show_default=False
        ),
    ] = None,
    ca: Annotated[
        str | None, typer.Option("--ca", help="Fingerprint of the CA that signed it.")
    ] = None,
    root: Annotated[
        bool, typer.Option("--root", help="The root's CRL (from the ceremony).")
    ] = False,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """Publish a CRL and apply it: everything it lists is revoked and dropped at once."""
    if root == (ca is not None):
        raise UsageError("give exactly one of --root or --ca FINGERPRINT")
    data, file = shift(data_dir, crl, "CRL")
    body = read_file(Path(file))
    with open_cloud(data, where) as cloud:
        effect = cloud.publish_crl(None if root else str(ca).lower(), body)

    def render() -> None:
        console.print(
            f"published; revoked {len(effect.revoked_certificates)} certificate(s) and "
            f"{len(effect.revoked_cas)} CA(s); {effect.not_registered} listed serial number(s) "
            "are not in the registry (refused if they ever appear)"
        )

    emit(effect, as_json, render)
