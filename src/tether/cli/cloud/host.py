"""``tether cloud init``, ``serve`` and ``rotate-server-cert``: on the cloud host only.

``init`` creates the first admin credential ("admin") and prints its token once; only its
scrypt hash is stored. ``serve`` runs the gateway on one uvloop event loop and the HTTPS
admin API in a process of its own, and prints where the console is.

A database URL with a password never comes from an argument: ``init`` reads it from
``--database-url-file`` or ``TETHER_DATABASE_URL`` (``--database-url`` only takes one without a
password) and writes it into ``cloud.json``, mode 0600.

The heavy parts (the gateway, the API process, the registry) are imported inside the
commands, so ``tether cloud --help`` and the remote commands do not pay for them.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from tether.cli.cloud.app import app, console
from tether.cli.cloud.target import actor
from tether.cli.secrets import DATABASE_URL_ENV, read_database_url, read_secret
from tether.errors import InvalidInputError, UsageError

if TYPE_CHECKING:
    from tether.cloud.admin import IssuedAdminToken

DataDir = typer.Argument(..., help="The cloud's data directory (made by `tether cloud init`).")


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
    from tether.cloud.registry import Registry
    from tether.cloud.rotation import rotate_server_certificate
    from tether.cloud.settings import CloudSettings
    from tether.pki.store import CaDirectory

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
            actor=actor(),
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
    publish_port: int = typer.Option(
        8080, help="Plain-HTTP port for CRLs and OCSP (publish.port in cloud.json)."
    ),
    token_file: Path | None = typer.Option(
        None,
        help="Write the first admin token to this new file (mode 0600) instead of printing it.",
    ),
    publish_url: str | None = typer.Option(
        None,
        help="Base URL written into issued certificates for CRLs and OCSP (default "
        "http://<api host>:<publish port>; the public name behind a proxy).",
    ),
) -> None:
    """Create a data directory: gateway certificate, pinned CA, registry, first admin token."""
    from tether.cloud.operations import AdminOperations
    from tether.cloud.registry import Registry
    from tether.cloud.settings import ApiOptions, CloudSettings, GatewayOptions, PublishOptions
    from tether.cloud.setup import init_data_dir
    from tether.pki import Role
    from tether.pki.store import CaDirectory, pem

    database_url = read_database_url(database_url, file=database_url_file)
    if token_file is not None and token_file.exists():
        raise UsageError(f"{token_file} exists; the token goes into a new file")
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
        publish=PublishOptions(host=api_host, port=publish_port, url=publish_url),
        online_device_ca=online,
        actor=actor(),
    )
    with Registry.open(CloudSettings.load(data_dir).database_url) as registry:
        operations = AdminOperations(
            registry, root_certificate=settings.root_certificate(), online_ca=None
        )
        issued = operations.create_admin("admin", actor=actor())
        url = registry.url
    console.print(f"[green]cloud data directory ready[/] at {data_dir}")
    console.print(f"  devices pin: {settings.pinned_ca}")
    console.print(f"  registry:    {url}")
    if token_file is None:
        _print_token(issued)
        return
    from tether.pki.store import write_new_file

    write_new_file(token_file, (issued.token + "\n").encode(), mode=0o600)
    console.print(
        f"  admin {issued.name!r} token written to {token_file} (mode 0600; shown nowhere)"
    )


def _print_token(issued: IssuedAdminToken) -> None:
    console.print(f"  admin {issued.name!r} token (shown once, only its hash is kept):")
    # Plain print, no markup: the token must come out exactly, for copy and paste or a script.
    typer.echo(issued.token)


def _configure_logging(level: str, log_format: str = "text") -> None:
    """Rich for a person at a terminal; one plain timestamped line per event otherwise.

    A service's log usually goes to a file or the journal, where Rich's layout is noise and
    its rendering costs more than the handshake it reports (see docs/benchmarks.md).
    ``json`` writes one object per line, wherever stderr goes (tether.cloud.observability.logs).
    """
    from rich.logging import RichHandler

    from tether.cloud.observability.logs import formatter as log_formatter

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
    publish_port: int | None = typer.Option(
        None, help="Override publish.port (plain-HTTP CRLs and OCSP; 0: any free port)."
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
    import uvloop

    from tether.cli.cluster import ROLES, serve_cluster
    from tether.cloud.api import ApiProcess, ApiProcessArgs
    from tether.cloud.enrollment.runtime import enrollment_companions
    from tether.cloud.observability.endpoints import GatewayEndpoints
    from tether.cloud.observability.logs import LOG_FORMATS
    from tether.cloud.registry import Registry
    from tether.cloud.service import CloudService, serve_until_signalled
    from tether.cloud.settings import CloudSettings

    if log_format not in LOG_FORMATS:
        raise UsageError(
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
    if settings.api.device_ca is not None or settings.enrollment.enabled:
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
            publish_port=publish_port,
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
            ca_passphrase=passphrase if settings.enrollment.enabled else None,
        )
        return
    registry = Registry.open(settings.database_url)
    try:
        service = CloudService(registry, settings.gateway_settings(**overrides), mqtt_state=True)
        extras = enrollment_companions(settings, service, passphrase)

        def ready(bound: int) -> None:
            console.print(
                f"[green]gateway[/] listening on {settings.gateway.host}:{bound} "
                f"(registry {registry.url})"
            )

        def api_ready(bound: int) -> None:
            signing = "online device CA loaded" if api.signs else "no online device CA"
            base = f"https://{settings.api.host}:{bound}"
            console.print(
                f"[green]admin API[/] on {base} ({signing}; pid {api.pid}; OpenAPI at "
                "/openapi.json)"
            )
            # Its own line, unwrapped: the address a person opens in a browser.
            console.print(f"[green]web console[/] {base}/console", soft_wrap=True)
            if api.publish_port is not None:
                console.print(
                    f"[green]CRLs and OCSP[/] http://{settings.publish.host}:{api.publish_port}"
                    f"/crl/<CA fingerprint>.crl, /ocsp (plain HTTP; certificates name "
                    f"{settings.publish.base_url})",
                    soft_wrap=True,
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
                extras=extras,
            )
        )
    finally:
        registry.close()
