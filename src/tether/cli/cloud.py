"""``tether cloud``: set up, feed and run the cloud (registry + gateway).

The commands that change the registry (register a CA, disable a device, revoke a
certificate) work on the registry directly and land in its audit log with the operator as
actor; a running ``tether cloud serve`` follows the log and drops affected sessions at once.
"""

from __future__ import annotations

import getpass
import logging
from pathlib import Path

import typer
import uvloop
from cryptography import x509
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from tether.cli.secrets import read_secret
from tether.cloud.registry import CARole, DeviceStatus, Registry
from tether.cloud.service import CloudService, serve_until_signalled
from tether.cloud.settings import CloudSettings, GatewayOptions
from tether.cloud.setup import init_data_dir
from tether.errors import InvalidInputError
from tether.pki import load_certificate, sha256_fingerprint
from tether.pki.store import CaDirectory, pem

app = typer.Typer(help="Run the cloud: registry, mutual-TLS MQTT 5 gateway.", no_args_is_help=True)
console = Console(highlight=False)

DataDir = typer.Argument(..., help="The cloud's data directory (made by `tether cloud init`).")

REASONS = {flag.name: flag for flag in x509.ReasonFlags}


def register(root: typer.Typer) -> None:
    """Add ``tether cloud`` to the root app."""
    root.add_typer(app, name="cloud")


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _registry(data_dir: Path) -> Registry:
    return Registry.open(CloudSettings.load(data_dir).database_url)


@app.command()
def init(
    data_dir: Path = DataDir,
    server_ca: Path = typer.Option(..., help="Directory of a server issuing CA."),
    ca_passphrase_file: Path | None = typer.Option(
        None, help="File with the server CA's passphrase (else TETHER_CA_PASSPHRASE or a prompt)."
    ),
    dns: list[str] = typer.Option(["localhost"], help="DNS name for the gateway certificate."),
    ip: list[str] = typer.Option(["127.0.0.1"], help="IP address for the gateway certificate."),
    host: str = typer.Option("127.0.0.1", help="Address the gateway listens on."),
    port: int = typer.Option(8883, help="Gateway port."),
    database_url: str | None = typer.Option(
        None, help="PostgreSQL URL (postgresql+psycopg://...); default a SQLite file inside."
    ),
) -> None:
    """Create a data directory: gateway certificate, pinned CA for devices, empty registry."""
    ca_dir = CaDirectory.open(server_ca)
    passphrase = read_secret(
        "server CA passphrase", env_var="TETHER_CA_PASSPHRASE", file=ca_passphrase_file
    )
    settings = init_data_dir(
        data_dir,
        server_ca=ca_dir.issuing(passphrase),
        pinned_ca=pem(ca_dir.root_certificate()),
        dns_names=dns,
        ip_addresses=ip,
        database_url=database_url,
        gateway=GatewayOptions(host=host, port=port),
    )
    console.print(f"[green]cloud data directory ready[/] at {data_dir}")
    console.print(f"  devices pin: {settings.pinned_ca}")
    console.print(f"  registry:    {Registry.open(settings.database_url).url}")


@app.command("register-ca")
def register_ca(
    data_dir: Path = DataDir,
    certificate: Path = typer.Argument(..., help="The CA certificate (PEM or DER)."),
    role: CARole = typer.Option(..., help="What the CA issues: device, factory or service."),
    allow_jit: bool = typer.Option(
        False, "--allow-jit", help="Register unknown devices under this CA on first connect."
    ),
) -> None:
    """Trust a CA for client certificates (an operator on the cloud host vouches for it)."""
    cert = load_certificate(certificate.read_bytes())
    with _registry(data_dir) as registry:
        record = registry.register_ca(
            cert, role=role, allow_auto_registration=allow_jit, actor=_actor()
        )
    console.print(f"[green]registered[/] {record.subject} as {record.role} CA")
    console.print(f"  fingerprint {record.fingerprint}")


@app.command()
def devices(
    data_dir: Path = DataDir,
    search: str | None = typer.Option(None, help="Only serials containing this text."),
    limit: int = typer.Option(50, help="At most this many."),
) -> None:
    """List devices with their status and when they were last seen."""
    with _registry(data_dir) as registry:
        page = registry.list_devices(search=search, limit=limit)
    table = Table("serial", "status", "provisioning", "first seen", "last seen")
    for device in page.items:
        table.add_row(
            device.serial,
            device.status,
            device.provisioning,
            str(device.first_seen or "-"),
            str(device.last_seen or "-"),
        )
    console.print(table)
    console.print(f"{len(page.items)} of {page.total}")


def _set_status(data_dir: Path, serial: str, status: DeviceStatus) -> None:
    with _registry(data_dir) as registry:
        record = registry.set_device_status(serial, status, actor=_actor())
    console.print(f"device {record.serial} is {record.status}")


@app.command()
def disable(data_dir: Path = DataDir, serial: str = typer.Argument(...)) -> None:
    """Disable a device: its next handshake is refused and a live session is dropped."""
    _set_status(data_dir, serial, DeviceStatus.DISABLED)


@app.command()
def enable(data_dir: Path = DataDir, serial: str = typer.Argument(...)) -> None:
    """Enable a disabled device again."""
    _set_status(data_dir, serial, DeviceStatus.ENABLED)


@app.command()
def revoke(
    data_dir: Path = DataDir,
    certificate: Path = typer.Argument(..., help="The certificate to revoke (PEM or DER)."),
    reason: str = typer.Option("key_compromise", help="A RFC 5280 reason, e.g. superseded."),
) -> None:
    """Revoke a device certificate: refused from the next handshake, live session dropped."""
    if reason not in REASONS:
        raise InvalidInputError(f"unknown reason {reason!r}; one of: {', '.join(REASONS)}")
    fingerprint = sha256_fingerprint(load_certificate(certificate.read_bytes()))
    with _registry(data_dir) as registry:
        record = registry.revoke_certificate(fingerprint, reason=REASONS[reason], actor=_actor())
    console.print(f"[red]revoked[/] {record.fingerprint} ({reason})")


@app.command()
def serve(
    data_dir: Path = DataDir,
    port: int | None = typer.Option(None, help="Override the gateway port (0: any free port)."),
    log_level: str = typer.Option("INFO", help="Log level for the gateway's log."),
) -> None:
    """Run the gateway until interrupted (Ctrl-C or SIGTERM)."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migration chatter, not service news
    settings = CloudSettings.load(data_dir)
    overrides = {} if port is None else {"port": port}
    registry = Registry.open(settings.database_url)
    service = CloudService(registry, settings.gateway_settings(**overrides))

    def ready(bound: int) -> None:
        console.print(
            f"[green]gateway[/] listening on {settings.gateway.host}:{bound} "
            f"(registry {registry.url})"
        )

    try:
        uvloop.run(serve_until_signalled(service, on_ready=ready))
    finally:
        registry.close()
