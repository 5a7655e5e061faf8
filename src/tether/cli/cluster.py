"""``tether cloud serve`` with several gateway workers, or with the roles on different hosts.

One worker and no ``nats_url`` is today's single process (``tether.cli.cloud.serve``). Here:
N gateway workers (:mod:`tether.cloud.workers`) on the gateway port, the admin API process
beside them (``--role all``) or alone (``--role api``), and the bus: the NATS servers of
``nats_url`` in cloud.json, else a loopback nats-server this command starts in
``DATA/run/`` and stops when it stops.
"""

from __future__ import annotations

import uvloop
from rich.console import Console
from sqlalchemy.engine import make_url

from tether.cloud.api import ApiProcess
from tether.cloud.bus.natsd import LocalNatsServer
from tether.cloud.registry.engine import safe_url
from tether.cloud.settings import CloudSettings
from tether.cloud.workers import ApiLike, GatewayWorkers, serve_workers

ROLES = ("all", "gateway", "api")
console = Console(
    highlight=False, soft_wrap=True
)  # stdout, as tether.cli.cloud prints its ready lines


def serve_cluster(
    settings: CloudSettings,
    api: ApiProcess | None,
    *,
    count: int,
    port: int | None,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    ca_passphrase: str | None = None,
) -> None:
    """Run ``count`` workers (0: none) and ``api`` (None: none) until interrupted.

    ``ca_passphrase`` opens the operational CA in each worker when enrollment is on.
    """
    local: LocalNatsServer | None = None
    servers = settings.nats_servers
    if count and not servers:
        local = LocalNatsServer(
            settings.data_dir / "run",
            name="tether-nats",
            max_payload=max(settings.gateway.max_packet_size + 4096, 1024 * 1024),
            stop_with_parent=True,
        )
        servers = (local.start(),)
    try:
        workers = None
        if count:
            workers = GatewayWorkers(
                settings.data_dir,
                count,
                servers,
                port=port,
                log_level=log_level,
                log_format=log_format,
                metrics_port=metrics_port,
                ca_passphrase=ca_passphrase,
            )

        def ready(
            workers: GatewayWorkers | None,
            _api: ApiLike | None,
            bound: int | None,
            api_port: int | None,
        ) -> None:
            if workers is not None:
                registry = safe_url(make_url(settings.database_url))
                bus = f"local nats-server pid {local.pid}" if local is not None else "NATS"
                console.print(
                    f"[green]gateway[/] listening on {settings.gateway.host}:{bound} "
                    f"({count} workers, pids {', '.join(map(str, workers.pids))}; bus "
                    f"{', '.join(servers)} ({bus}); registry {registry})"
                )
            if api is not None:
                signing = "online device CA loaded" if api.signs else "no online device CA"
                console.print(
                    f"[green]admin API[/] on https://{settings.api.host}:{api_port} ({signing}; "
                    f"pid {api.pid}; OpenAPI at /openapi.json)"
                )
            if settings.metrics.enabled:
                where = f"http://{settings.metrics.host}"
                parts = []
                if workers is not None:
                    first, *others = workers.metrics_ports
                    extra = f"; workers 2..: ports {', '.join(map(str, others))}" if others else ""
                    parts.append(f"gateway {where}:{first}/metrics (/healthz, /readyz{extra})")
                api_metrics = getattr(api, "metrics_port", None)
                if api_metrics is not None:
                    parts.append(f"admin API {where}:{api_metrics}/metrics")
                console.print(f"[green]metrics[/] {'; '.join(parts)}")

        uvloop.run(serve_workers(workers, api, on_ready=ready))
    finally:
        if local is not None:
            local.stop()
