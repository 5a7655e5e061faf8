"""The observability listener of each process, ready to run beside the gateway or the API.

:class:`GatewayEndpoints` (gateway process: ``/metrics``, ``/healthz``, ``/readyz``, and
``/sessions``, the live view for the hygiene audit: :mod:`.live`) is a ``Companion`` of
:func:`tether.cloud.service.serve_until_signalled`; :class:`ApiEndpoints` (the API process:
its request metrics on ``/metrics`` and ``/healthz``) runs in the API's child
(:mod:`tether.cloud.api.process`). See :mod:`.metrics` for why there are two targets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from tether.cloud.observability.health import GatewayReadiness, live
from tether.cloud.observability.http import ObservabilityListener, Reply
from tether.cloud.observability.live import sessions_reply
from tether.cloud.observability.metrics import (
    CONTENT_TYPE,
    ApiMetrics,
    exposition,
    gateway_registry,
)

if TYPE_CHECKING:
    from tether.cloud.service import CloudService


class GatewayEndpoints:
    """``/metrics``, ``/healthz`` and ``/readyz`` of a gateway process."""

    def __init__(
        self,
        service: CloudService,
        *,
        host: str,
        port: int,
        feed_max_lag: float,
        api_alive: Callable[[], bool] | None = None,
    ) -> None:
        self.service = service
        self.registry = gateway_registry(service)
        self.readiness = GatewayReadiness(service, feed_max_lag=feed_max_lag, api_alive=api_alive)
        self.listener = ObservabilityListener(
            {
                "/metrics": self._metrics,
                "/healthz": live,
                "/readyz": self.readiness.reply,
                "/sessions": self._sessions,
            },
            host=host,
            port=port,
        )

    async def _metrics(self) -> Reply:
        return Reply(200, CONTENT_TYPE, exposition(self.registry))

    async def _sessions(self) -> Reply:
        return sessions_reply(self.service.gateway)

    async def start(self) -> int:
        """Bind; returns the port."""
        return await self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()
        self.readiness.close()


class ApiEndpoints:
    """``/metrics`` and ``/healthz`` of the admin API's process."""

    def __init__(self, metrics: ApiMetrics, *, host: str, port: int) -> None:
        self.metrics = metrics
        self.listener = ObservabilityListener(
            {"/metrics": self._metrics, "/healthz": live}, host=host, port=port
        )

    async def _metrics(self) -> Reply:
        return Reply(200, CONTENT_TYPE, exposition(self.metrics.registry))

    async def start(self) -> int:
        return await self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()
