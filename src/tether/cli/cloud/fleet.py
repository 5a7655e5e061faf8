"""``tether cloud devices|device|disable|enable|move-device|certificates|revoke|register-cert|
audit-log``: the fleet's identities, here (DATA) or through the admin API (``--url``).

Revocation picks its certificate one of four ways: a certificate file, ``--fingerprint``
(SHA-256 hex), ``--serial-number`` (the X.509 serial number in hex, as ``openssl x509
-serial`` prints it; refused when two issuers used the same one, with both fingerprints in
the message) or ``--device SERIAL`` (every active certificate of that device). Exactly one.

``register-cert`` records a certificate a registered CA signed outside the cloud (``tether ca
issue-service``, ``tether ca sign-csr``) with the checks just-in-time registration applies
(``tether.cloud.registration``); until then the gateway refuses it (``certificate_unknown``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from rich.table import Table

from tether.cli.cloud.app import DataDir, Json, app, console, emit, read_file, when
from tether.cli.cloud.target import Where, open_cloud, shift, with_where
from tether.errors import InvalidInputError, NotFoundError, UsageError

REASONS = {flag.name: flag for flag in x509.ReasonFlags}
Limit = Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")]
Offset = Annotated[int, typer.Option(min=0, help="Skip this many first.")]


def _reason(reason: str) -> x509.ReasonFlags:
    if reason not in REASONS:
        raise UsageError(f"unknown reason {reason!r}; one of: {', '.join(REASONS)}")
    return REASONS[reason]


@app.command()
@with_where
def devices(
    data_dir: DataDir = None,
    search: Annotated[str | None, typer.Option(help="Only serials containing this text.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """List devices with their state (enabled only with a valid certificate), whether they are
    connected now (from the running gateway's /sessions; "unknown" if it cannot be read), and
    when they were last seen."""
    with open_cloud(None if data_dir is None else Path(data_dir), where) as cloud:
        page = cloud.devices(search=search, offset=offset, limit=limit)

    def render() -> None:
        table = Table("serial", "state", "connected", "provisioning", "first seen", "last seen")
        for device in page.items:
            healthy = device.state == "enabled"
            table.add_row(
                device.serial,
                device.state if healthy else f"[red]{device.state}[/]",
                device.connection or "unknown",
                device.provisioning,
                when(device.first_seen),
                when(device.last_seen),
            )
        console.print(table)
        console.print(f"{len(page.items)} of {page.total}")

    emit(page, as_json, render)


@app.command()
@with_where
def device(
    data_dir: DataDir = None,
    serial: Annotated[str | None, typer.Argument(metavar="SERIAL", show_default=False)] = None,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """One device, its state and its certificates."""
    data, name = shift(data_dir, serial, "SERIAL")
    with open_cloud(data, where) as cloud:
        detail = cloud.device(name)

    def render() -> None:
        d = detail.device
        console.print(f"{d.serial}  {detail.state}  ({d.provisioning}, CA {d.ca_fingerprint})")
        _certificate_table(detail.certificates)

    emit(detail, as_json, render)


def _set_status(data_dir: str | None, serial: str | None, where: Where, enable: bool) -> None:
    from tether.cloud.registry import DeviceStatus

    data, name = shift(data_dir, serial, "SERIAL")
    status = DeviceStatus.ENABLED if enable else DeviceStatus.DISABLED
    with open_cloud(data, where) as cloud:
        record = cloud.set_device_status(name, status)
    console.print(f"device {record.serial} is {record.status}")


SerialArg = Annotated[str | None, typer.Argument(metavar="SERIAL", show_default=False)]


@app.command()
@with_where
def disable(data_dir: DataDir = None, serial: SerialArg = None, *, where: Where) -> None:
    """Disable a device: its next handshake is refused and a live session is dropped."""
    _set_status(data_dir, serial, where, enable=False)


@app.command()
@with_where
def enable(data_dir: DataDir = None, serial: SerialArg = None, *, where: Where) -> None:
    """Enable a disabled device again."""
    _set_status(data_dir, serial, where, enable=True)


@app.command("move-device")
@with_where
def move_device(
    data_dir: DataDir = None,
    serial: SerialArg = None,
    ca: Annotated[
        str, typer.Option("--ca", help="Fingerprint (SHA-256 hex) of the CA to move to.")
    ] = "",
    *,
    where: Where,
) -> None:
    """Move a device to another CA: only that CA's certificates are accepted from now on.

    A serial belongs to the CA that first vouched for it; this is the one explicit way to
    change that (audited). Live sessions under the old CA are dropped.
    """
    if not ca:
        raise UsageError("missing --ca FINGERPRINT (the CA to move the device to)")
    data, name = shift(data_dir, serial, "SERIAL")
    with open_cloud(data, where) as cloud:
        record = cloud.move_device(name, ca.lower())
    console.print(f"device {record.serial} now belongs to CA {record.ca_fingerprint}")


@app.command()
@with_where
def certificates(
    data_dir: DataDir = None,
    device: Annotated[str | None, typer.Option(help="Only this device's.")] = None,
    issuer: Annotated[str | None, typer.Option(help="Only this CA's (fingerprint).")] = None,
    serial_number: Annotated[
        str | None, typer.Option(help="Only this X.509 serial number (hex).")
    ] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """List registered certificates (oldest first), of a device, a CA or a serial number."""
    with open_cloud(None if data_dir is None else Path(data_dir), where) as cloud:
        page = cloud.certificates(
            device=device, issuer=issuer, serial_number=serial_number, offset=offset, limit=limit
        )

    def render() -> None:
        _certificate_table(page.items)
        console.print(f"{len(page.items)} of {page.total}")

    emit(page, as_json, render)


def _certificate_table(items: list) -> None:  # type: ignore[type-arg]
    table = Table("fingerprint", "serial number", "identity", "state", "not after", "reason")
    for cert in items:
        table.add_row(
            cert.fingerprint,
            cert.serial_number,
            cert.device_serial or "-",
            cert.state if cert.state == "active" else f"[red]{cert.state}[/]",
            when(cert.not_after),
            cert.revocation_reason or "",
        )
    console.print(table)


@app.command()
@with_where
def revoke(
    data_dir: DataDir = None,
    certificate: Annotated[
        str | None,
        typer.Argument(
            metavar="[CERT]", help="The certificate file (PEM or DER).", show_default=False
        ),
    ] = None,
    fingerprint: Annotated[str | None, typer.Option(help="SHA-256 fingerprint (hex).")] = None,
    serial_number: Annotated[
        str | None, typer.Option(help="X.509 serial number (hex, as openssl prints it).")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="Every active certificate of this device.")
    ] = None,
    reason: Annotated[str, typer.Option(help="A RFC 5280 reason, e.g. superseded.")] = (
        "key_compromise"
    ),
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """Revoke certificates: refused from the next handshake, live sessions dropped."""
    from tether.pki import load_certificate, sha256_fingerprint

    flag = _reason(reason)
    chosen = [v for v in (fingerprint, serial_number, device) if v is not None]
    data = None if data_dir is None else Path(data_dir)
    if chosen and certificate is None:
        pass  # one positional: it is DATA
    elif certificate is None and data_dir is not None:
        data, certificate = None, data_dir  # one positional and no option: it is CERT
    if len(chosen) + (certificate is not None) != 1:
        raise UsageError(
            "name the certificate one way: a file, --fingerprint, --serial-number or --device"
        )
    with open_cloud(data, where) as cloud:
        if certificate is not None:
            targets = [sha256_fingerprint(load_certificate(read_file(Path(certificate))))]
        elif fingerprint is not None:
            targets = [fingerprint.lower()]
        else:
            page = cloud.certificates(serial_number=serial_number, device=device, limit=1000)
            targets = [c.fingerprint for c in page.items if device is None or c.state != "revoked"]
            if not targets:
                what = f"serial number {serial_number}" if device is None else f"device {device}"
                raise NotFoundError(
                    f"no {'' if device is None else 'unrevoked '}certificate with {what}",
                    code="certificate_not_found",
                )
            if serial_number is not None and len(targets) > 1:
                raise InvalidInputError(
                    f"serial number {serial_number} is used by {len(targets)} certificates (of "
                    f"different CAs): {', '.join(targets)}; revoke by --fingerprint",
                    code="serial_number_ambiguous",
                )
        done = [cloud.revoke(target, flag) for target in targets]

    def render() -> None:
        for record in done:
            console.print(f"[red]revoked[/] {record.fingerprint} ({reason})", soft_wrap=True)

    emit(done, as_json, render)


@app.command("register-cert")
@with_where
def register_cert(
    data_dir: DataDir = None,
    certificate: Annotated[
        str | None,
        typer.Argument(metavar="CERT", help="The certificate (PEM or DER).", show_default=False),
    ] = None,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """Register a certificate a registered CA signed elsewhere (issue-service, sign-csr).

    The same checks as just-in-time registration: the profile, an active registered client
    CA that signed it, not on its CRL, and an identity that is new or already that CA's.
    """
    data, file = shift(data_dir, certificate, "CERT")
    pem = read_file(Path(file))
    with open_cloud(data, where) as cloud:
        done = cloud.register_certificate(pem)

    def render() -> None:
        console.print(
            f"[green]registered[/] {done.certificate.fingerprint} for {done.device.serial} "
            f"(CA {done.certificate.issuer_fingerprint})",
            soft_wrap=True,
        )

    emit(done, as_json, render)


@app.command("audit-log")
@with_where
def audit_log(
    data_dir: DataDir = None,
    target: Annotated[str | None, typer.Option(help="Only entries about this target.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
    as_json: Json = False,
    *,
    where: Where,
) -> None:
    """The audit log, newest first: who did what to which device, certificate, CA or admin."""
    with open_cloud(None if data_dir is None else Path(data_dir), where) as cloud:
        page = cloud.audit_log(target=target, offset=offset, limit=limit)

    def render() -> None:
        table = Table("at", "actor", "action", "target", "details")
        for entry in page.items:
            details = ", ".join(f"{k}={v}" for k, v in entry.details.items())
            table.add_row(when(entry.at), entry.actor, entry.action, entry.target, details)
        console.print(table)
        console.print(f"{len(page.items)} of {page.total}")

    emit(page, as_json, render)
