"""``tether cloud``: set up, feed and run the cloud (registry + gateway + admin API).

``init`` creates the first admin credential ("admin") and prints its token once; only its
scrypt hash is stored. ``admin add NAME`` makes more, ``admin rotate NAME`` replaces a token
(the new one printed once, the old one refused at once), ``admin revoke NAME`` ends one for
good (never the last active admin). ``serve`` runs the gateway on one uvloop event loop and
the HTTPS admin API in a process of its own.

A database URL with a password never comes from an argument: ``init`` reads it from
``--database-url-file`` or ``TETHER_DATABASE_URL`` (``--database-url`` only takes one without a
password) and writes it into ``cloud.json``, mode 0600.

The commands that change the registry (register a CA, disable a device, revoke a
certificate, admins) go through the admin service (``tether.cloud.operations``), the same one
the API and the console use, and land in the audit log with the operator as actor; a running
``tether cloud serve`` follows the log and drops affected sessions at once. Listings read the
registry directly.
"""

from __future__ import annotations

import getpass
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import typer
import uvloop
from cryptography import x509
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from tether.cli.cluster import ROLES, serve_cluster
from tether.cli.secrets import DATABASE_URL_ENV, read_database_url, read_secret
from tether.cloud.admin import IssuedAdminToken
from tether.cloud.api import ApiProcess, ApiProcessArgs
from tether.cloud.device_state import device_states
from tether.cloud.observability.endpoints import GatewayEndpoints
from tether.cloud.observability.live import read_live_view
from tether.cloud.observability.logs import LOG_FORMATS
from tether.cloud.observability.logs import formatter as log_formatter
from tether.cloud.operations import AdminOperations
from tether.cloud.registry import ROOT_CRL_ISSUER, CARole, DeviceStatus, Registry
from tether.cloud.rotation import rotate_server_certificate
from tether.cloud.service import CloudService, serve_until_signalled
from tether.cloud.settings import ApiOptions, CloudSettings, GatewayOptions
from tether.cloud.setup import init_data_dir
from tether.errors import InvalidInputError
from tether.pki import Role, load_certificate, sha256_fingerprint
from tether.pki.store import CaDirectory, pem

app = typer.Typer(
    help="Run the cloud: registry, mutual-TLS MQTT 5 gateway, HTTPS admin API.",
    no_args_is_help=True,
)
admin_app = typer.Typer(help="Admin credentials for the API.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
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


@contextmanager
def _operations(data_dir: Path) -> Iterator[AdminOperations]:
    """The admin service over the data directory's registry (no online CA: nothing signed)."""
    settings = CloudSettings.load(data_dir)
    with Registry.open(settings.database_url) as registry:
        yield AdminOperations(
            registry, root_certificate=settings.root_certificate(), online_ca=None
        )


@app.command("rotate-server-cert")
def rotate_server_cert(
    data_dir: Path = DataDir,
    server_ca: Path = typer.Option(..., help="Directory of the (pinned) server issuing CA."),
    ca_passphrase_file: Path | None = typer.Option(
        None, help="File with the server CA's passphrase (else TETHER_CA_PASSPHRASE or a prompt)."
    ),
    dns: list[str] = typer.Option([], help="DNS name (default: the current certificate's)."),
    ip: list[str] = typer.Option([], help="IP address (default: the current certificate's)."),
) -> None:
    """Renew the gateway's certificate; a running gateway uses it for new handshakes at once."""
    settings = CloudSettings.load(data_dir)
    ca_dir = CaDirectory.open(server_ca)
    passphrase = read_secret(
        "server CA passphrase", env_var="TETHER_CA_PASSPHRASE", file=ca_passphrase_file
    )
    with Registry.open(settings.database_url) as registry:
        done = rotate_server_certificate(
            settings,
            registry,
            ca_dir.issuing(passphrase),
            actor=_actor(),
            dns_names=dns,
            ip_addresses=ip,
        )
    console.print(
        f"[green]rotated[/] gateway certificate {done.fingerprint} (valid until "
        f"{done.certificate.not_valid_after_utc:%Y-%m-%d}); previous {done.previous_fingerprint}. "
        "Running gateways present it from their next handshake; the admin API after a restart."
    )


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
        None,
        help="PostgreSQL URL without a password (postgresql+psycopg://user@host/db); default "
        "a SQLite file inside. A URL with a password is refused here: use --database-url-file "
        f"or {DATABASE_URL_ENV}.",
    ),
    database_url_file: Path | None = typer.Option(
        None, help=f"File holding the database URL (else {DATABASE_URL_ENV}, else SQLite)."
    ),
    device_ca: Path | None = typer.Option(
        None,
        help="The online device issuing CA directory the API signs with (console devices, "
        "CSRs); its passphrase is asked at serve time.",
    ),
    api_host: str = typer.Option("127.0.0.1", help="Address the admin API listens on."),
    api_port: int = typer.Option(8443, help="Admin API port (HTTPS)."),
) -> None:
    """Create a data directory: gateway certificate, pinned CA, registry, first admin token."""
    database_url = read_database_url(database_url, file=database_url_file)
    online = None
    if device_ca is not None:
        online_dir = CaDirectory.open(device_ca)
        if online_dir.kind != "issuing" or online_dir.metadata.role not in (
            Role.DEVICE,
            Role.FACTORY,
        ):
            raise InvalidInputError(
                f"{device_ca} is not a device issuing CA directory; make one with "
                "`tether ca issue-intermediate --role device`",
                code="wrong_ca_role",
            )
        online = online_dir.certificate
    ca_dir = CaDirectory.open(server_ca)
    passphrase = read_secret(
        "server CA passphrase", env_var="TETHER_CA_PASSPHRASE", file=ca_passphrase_file
    )
    settings = init_data_dir(
        data_dir,
        server_ca=ca_dir.issuing(passphrase),
        root_ca=pem(ca_dir.root_certificate()),
        dns_names=dns,
        ip_addresses=ip,
        database_url=database_url,
        gateway=GatewayOptions(host=host, port=port),
        api=ApiOptions(
            host=api_host,
            port=api_port,
            device_ca=None if device_ca is None else str(device_ca.resolve()),
        ),
        online_device_ca=online,
        actor=_actor(),
    )
    with _operations(data_dir) as operations:
        issued = operations.create_admin("admin", actor=_actor())
        url = operations.registry.url
    console.print(f"[green]cloud data directory ready[/] at {data_dir}")
    console.print(f"  devices pin: {settings.pinned_ca}")
    console.print(f"  registry:    {url}")
    _print_token(issued)


def _print_token(issued: IssuedAdminToken) -> None:
    console.print(f"  admin {issued.name!r} token (shown once, only its hash is kept):")
    # Plain print, no markup: the token must come out exactly, for copy and paste or a script.
    typer.echo(issued.token)


@admin_app.command("add")
def admin_add(
    data_dir: Path = DataDir,
    name: str = typer.Argument(..., help="The new admin's name (a-z, 0-9, . _ -)."),
) -> None:
    """Create another admin credential; its token is printed once."""
    with _operations(data_dir) as operations:
        issued = operations.create_admin(name, actor=_actor())
    _print_token(issued)


@admin_app.command("list")
def admin_list(data_dir: Path = DataDir) -> None:
    """List the admins (names only: tokens are never stored)."""
    with _registry(data_dir) as registry:
        admins = registry.list_admins()
    for record in admins:
        line = f"{record.name}  {record.status}  created {record.created_at:%Y-%m-%d %H:%M:%SZ}"
        if record.revoked_at is not None:
            line += f"  revoked {record.revoked_at:%Y-%m-%d %H:%M:%SZ}"
        console.print(line)


@admin_app.command("rotate")
def admin_rotate(
    data_dir: Path = DataDir,
    name: str = typer.Argument(..., help="The admin whose token is replaced."),
) -> None:
    """Give an admin a new token (printed once); the old token is refused at once."""
    with _operations(data_dir) as operations:
        issued = operations.rotate_admin(name, actor=_actor())
    _print_token(issued)


@admin_app.command("revoke")
def admin_revoke(
    data_dir: Path = DataDir,
    name: str = typer.Argument(..., help="The admin to revoke (for good)."),
) -> None:
    """Revoke an admin: its token is refused from the next request, in every process.

    The last active admin cannot be revoked; rotate its token instead.
    """
    with _operations(data_dir) as operations:
        record = operations.revoke_admin(name, actor=_actor())
    console.print(f"[red]revoked[/] admin {record.name}")


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
    with _operations(data_dir) as operations:
        record = operations.trust_ca(
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
    """List devices with their state (enabled only with a valid certificate), whether they are
    connected now (from the running gateway's /sessions; "unknown" if it cannot be read), and
    when they were last seen."""
    settings = CloudSettings.load(data_dir)
    live = (
        partial(read_live_view, settings.metrics.host, settings.metrics.port)
        if settings.metrics.enabled
        else None
    )
    with Registry.open(settings.database_url) as registry:
        page = registry.list_devices(search=search, limit=limit)
        states = device_states(registry, page.items, live_view=live)
    table = Table("serial", "state", "connected", "provisioning", "first seen", "last seen")
    for device in page.items:
        state = states[device.serial]
        table.add_row(
            device.serial,
            state.label if state.healthy else f"[red]{state.label}[/]",
            state.connection,
            device.provisioning,
            str(device.first_seen or "-"),
            str(device.last_seen or "-"),
        )
    console.print(table)
    console.print(f"{len(page.items)} of {page.total}")


def _set_status(data_dir: Path, serial: str, status: DeviceStatus) -> None:
    with _operations(data_dir) as operations:
        record = operations.set_device_status(serial, status, actor=_actor())
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
    with _operations(data_dir) as operations:
        record = operations.revoke_certificate(fingerprint, reason=REASONS[reason], actor=_actor())
    console.print(f"[red]revoked[/] {record.fingerprint} ({reason})")


@app.command("move-device")
def move_device(
    data_dir: Path = DataDir,
    serial: str = typer.Argument(...),
    ca: str = typer.Option(..., "--ca", help="Fingerprint (SHA-256 hex) of the CA to move to."),
) -> None:
    """Move a device to another CA: only that CA's certificates are accepted from now on.

    A serial belongs to the CA that first vouched for it; this is the one explicit way to
    change that (audited). Live sessions under the old CA are dropped.
    """
    with _operations(data_dir) as operations:
        record = operations.rebind_device(serial, ca_fingerprint=ca.lower(), actor=_actor())
    console.print(f"device {record.serial} now belongs to CA {record.ca_fingerprint}")


@app.command("publish-crl")
def publish_crl(
    data_dir: Path = DataDir,
    crl: Path = typer.Argument(..., help="The CRL (PEM or DER) the CA signed."),
    ca: str | None = typer.Option(None, "--ca", help="Fingerprint of the CA that signed it."),
    root: bool = typer.Option(False, "--root", help="The root's CRL (from the ceremony)."),
) -> None:
    """Publish a CRL and apply it: everything it lists is revoked and dropped at once."""
    if root == (ca is not None):
        raise InvalidInputError("give exactly one of --root or --ca FINGERPRINT")
    with _operations(data_dir) as operations:
        issuer = ROOT_CRL_ISSUER if root else str(ca).lower()
        effect = operations.publish_crl(issuer, crl.read_bytes(), actor=_actor())
    console.print(
        f"published; revoked {len(effect.revoked_certificates)} certificate(s) and "
        f"{len(effect.revoked_cas)} CA(s); {effect.not_registered} listed serial number(s) "
        "are not in the registry (refused if they ever appear)"
    )


def _configure_logging(level: str, log_format: str = "text") -> None:
    """Rich for a person at a terminal; one plain timestamped line per event otherwise.

    A service's log usually goes to a file or the journal, where Rich's layout is noise and
    its rendering costs more than the handshake it reports (see docs/benchmarks.md).
    ``json`` writes one object per line, wherever stderr goes (tether.cloud.observability.logs).
    """
    handler: logging.Handler
    if log_format == "text" and sys.stderr.isatty():
        handler = RichHandler(console=Console(stderr=True), show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(log_formatter(log_format))
    logging.basicConfig(level=level.upper(), handlers=[handler])


@app.command()
def serve(
    data_dir: Path = DataDir,
    port: int | None = typer.Option(None, help="Override the gateway port (0: any free port)."),
    api_port: int | None = typer.Option(None, help="Override the API port (0: any free port)."),
    device_ca_passphrase_file: Path | None = typer.Option(
        None, help="File with the online device CA's passphrase (else TETHER_CA_PASSPHRASE)."
    ),
    log_level: str = typer.Option("INFO", help="Log level for the gateway's log."),
    log_format: str = typer.Option(
        "text", help="text, or json: one object per line with the reason code as tether_code."
    ),
    metrics_port: int | None = typer.Option(
        None, help="Override metrics.port (/metrics, /healthz, /readyz; 0: any free port)."
    ),
    api_metrics_port: int | None = typer.Option(
        None, help="Override metrics.api_port (the API process's /metrics; 0: any free port)."
    ),
    workers: int | None = typer.Option(
        None,
        help="Gateway worker processes on the gateway port (default: one per core; 1 keeps "
        "one process). More than one uses NATS: nats_url in cloud.json, else a local "
        "nats-server started and stopped with the service.",
    ),
    role: str = typer.Option(
        "all", help="all, gateway (workers only) or api (the admin API only), for hosts apart."
    ),
) -> None:
    """Run the gateway and the admin API until interrupted (Ctrl-C or SIGTERM)."""
    if log_format not in LOG_FORMATS:
        raise InvalidInputError(
            f"unknown --log-format {log_format!r}; use one of {', '.join(LOG_FORMATS)}",
            code="log_format_unknown",
        )
    if role not in ROLES:
        raise InvalidInputError(
            f"unknown --role {role!r}; use one of {', '.join(ROLES)}", code="role_unknown"
        )
    count = (os.cpu_count() or 1) if workers is None else workers
    if count < 1:
        raise InvalidInputError(
            f"--workers must be at least 1 (got {count})", code="workers_invalid"
        )
    _configure_logging(log_level, log_format)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # migration chatter, not service news
    settings = CloudSettings.load(data_dir)
    overrides = {} if port is None else {"port": port}
    passphrase = None
    if settings.api.device_ca is not None:
        passphrase = read_secret(
            "online device CA passphrase",
            env_var="TETHER_CA_PASSPHRASE",
            file=device_ca_passphrase_file,
        )
    # The API runs in a process of its own (see tether.cloud.api.process): API abuse must not
    # share this loop, thread pool or GIL with the gateway's handshakes and revocation feed.
    # The online CA's key is loaded there only; this process never holds it.
    api = ApiProcess(
        ApiProcessArgs(
            data_dir=data_dir,
            port=api_port,
            ca_passphrase=passphrase,
            log_level=log_level,
            log_format=log_format,
            metrics_port=api_metrics_port,
        )
    )
    if role == "api" or count > 1 or settings.nats_servers:
        serve_cluster(
            settings,
            api if role != "gateway" else None,
            count=count if role != "api" else 0,
            port=port,
            log_level=log_level,
            log_format=log_format,
            metrics_port=metrics_port,
        )
        return
    registry = Registry.open(settings.database_url)
    try:
        service = CloudService(registry, settings.gateway_settings(**overrides))

        def ready(bound: int) -> None:
            console.print(
                f"[green]gateway[/] listening on {settings.gateway.host}:{bound} "
                f"(registry {registry.url})"
            )

        def api_ready(bound: int) -> None:
            signing = "online device CA loaded" if api.signs else "no online device CA"
            console.print(
                f"[green]admin API[/] on https://{settings.api.host}:{bound} ({signing}; "
                f"pid {api.pid}; OpenAPI at /openapi.json)"
            )

        endpoints = None
        if settings.metrics.enabled:
            endpoints = GatewayEndpoints(
                service,
                host=settings.metrics.host,
                port=settings.metrics.port if metrics_port is None else metrics_port,
                feed_max_lag=settings.metrics.feed_max_lag,
                api_alive=api.alive if role == "all" else None,
            )

        def endpoints_ready(bound: int) -> None:
            where = f"http://{settings.metrics.host}"
            console.print(
                f"[green]metrics[/] gateway {where}:{bound}/metrics (/healthz, /readyz); "
                f"admin API {where}:{api.metrics_port}/metrics"
            )

        uvloop.run(
            serve_until_signalled(
                service,
                on_ready=ready,
                api=api if role == "all" else None,
                on_api_ready=api_ready,
                endpoints=endpoints,
                on_endpoints_ready=endpoints_ready,
            )
        )
    finally:
        registry.close()
