"""Prometheus metrics of a cloud process, read from its own counters at scrape time.

**Names** follow Prometheus conventions: a ``tether_`` prefix, ``_total`` on counters, base
units (``_seconds``), labels for what varies (``result``, ``code``, ``route``, ``status``) and
never for what an outsider chooses (no serial, no raw path: a route is the API's path
template, and an unmatched request is ``route="unmatched"``, so a scan cannot grow the label
set).

**Where they are served.** ``tether cloud serve`` runs the gateway in the main process and the
admin API in a child process (:mod:`tether.cloud.api.process`). Each process serves its own
metrics on its own plain-HTTP loopback listener (``metrics`` in ``cloud.json``: ``port``, default
9883, for the gateway with ``/healthz`` and ``/readyz``; ``api_port``, default 9884, for the API's
request counters). No metrics cross a process boundary: pushing the API's counters into the
gateway would put an IPC hop on the gateway's loop, and two scrape targets are what Prometheus
is built for (``job="tether-gateway"``, ``job="tether-api"``). Once there are several gateway
workers, each is a target of its own (per-worker ``port``) and PromQL sums them: that *is* the
"one registry across workers", without a shared-memory registry to corrupt.

**Cost.** The gateway's collector is custom: nothing is updated on the hot path but plain
integers (``GatewayStats``, ``FeedStats``, ``LimitCounters``), and the families are built only
when a scraper asks, on the event loop, in well under a millisecond for the label sets here.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.routing import Match

from tether.cloud.gateway.stats import BucketHistogram

if TYPE_CHECKING:
    from tether.cloud.api.guard import AdminGuard
    from tether.cloud.service import CloudService

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED_ROUTE = "unmatched"
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _histogram(name: str, documentation: str, histogram: BucketHistogram) -> HistogramMetricFamily:
    buckets = [
        ("+Inf" if bound == float("inf") else repr(float(bound)), count)
        for bound, count in histogram.cumulative()
    ]
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=histogram.sum)


class GatewayCollector(Collector):
    """The gateway process's metrics, read from ``service`` when scraped (on its loop)."""

    def __init__(self, service: CloudService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        """Every family, built from the counters as they are now."""
        gateway = self.service.gateway
        report = gateway.limits_report()
        stats = gateway.stats
        feed = self.service.feed

        yield GaugeMetricFamily(
            "tether_gateway_sessions",
            "MQTT sessions connected now (CONNECT accepted, not closing): devices and services.",
            value=report.sessions,
        )
        yield GaugeMetricFamily(
            "tether_gateway_connections",
            "TCP connections open now, in any phase (TLS, verdict, CONNECT, session).",
            value=report.open_connections,
        )
        yield GaugeMetricFamily(
            "tether_gateway_pending_connections",
            "Connections that have not finished TLS + CONNECT yet.",
            value=report.pending_connections,
        )
        yield GaugeMetricFamily(
            "tether_gateway_max_connections",
            "The connection cap in force (max_connections, clamped below the fd limit).",
            value=report.max_connections,
        )
        yield GaugeMetricFamily(
            "tether_gateway_subscriptions", "Live subscriptions.", value=report.subscriptions
        )

        handshakes = CounterMetricFamily(
            "tether_gateway_handshakes",
            "Finished handshakes (TLS + verdict + CONNECT) by result and reason code.",
            labels=("result", "code"),
        )
        for (result, code), count in sorted(stats.handshakes().items()):
            handshakes.add_metric((result.value, code), count)
        yield handshakes
        yield _histogram(
            "tether_gateway_handshake_duration_seconds",
            "Seconds from TCP accept to CONNACK or refusal.",
            stats.handshake_seconds,
        )

        limits = CounterMetricFamily(
            "tether_gateway_limit_reached",
            "How often each gateway limit acted, by its limit code.",
            labels=("code",),
        )
        for code, count in sorted(report.counters.items()):
            limits.add_metric((code,), count)
        yield limits

        for name, documentation, value in (
            ("tether_gateway_messages_received", "Messages routed in.", stats.messages_received),
            (
                "tether_gateway_messages_delivered",
                "Message copies queued to subscribers.",
                stats.messages_delivered,
            ),
            (
                "tether_gateway_messages_dropped",
                "Message copies a subscriber refused (closing, slow consumer, too big).",
                stats.messages_dropped,
            ),
        ):
            yield CounterMetricFamily(name, documentation, value=value)

        yield GaugeMetricFamily(
            "tether_feed_lag_seconds",
            "Seconds since the change feed last caught up with the registry.",
            value=feed.lag(),
        )
        yield GaugeMetricFamily(
            "tether_feed_position", "The last audit id the feed applied.", value=feed.position
        )
        yield CounterMetricFamily(
            "tether_feed_failures", "Feed polls that failed.", value=feed.failures
        )
        endings = CounterMetricFamily(
            "tether_revocations",
            "Registry changes that ended identities (revocations, disables, CA deactivations, "
            "moves), by refusal code.",
            labels=("code",),
        )
        for code, count in sorted(feed.endings().items()):
            endings.add_metric((code,), count)
        yield endings
        dropped = CounterMetricFamily(
            "tether_revocation_sessions_dropped",
            "Live sessions dropped by those changes, by refusal code.",
            labels=("code",),
        )
        for code, count in sorted(feed.dropped().items()):
            dropped.add_metric((code,), count)
        yield dropped
        yield _histogram(
            "tether_revocation_drop_duration_seconds",
            "Seconds from a change's commit to its last live session closed.",
            feed.drop_seconds,
        )


def gateway_registry(service: CloudService) -> CollectorRegistry:
    """A registry holding only this gateway's collector (no process or platform defaults)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(service))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition format of ``registry`` (what ``/metrics`` answers)."""
    return generate_latest(registry)


class _ApiLimitsCollector(Collector):
    def __init__(self, guard: AdminGuard) -> None:
        self.guard = guard

    def collect(self) -> Iterator[Metric]:
        report = self.guard.report()
        acted = CounterMetricFamily(
            "tether_api_limit_reached",
            "How often each admin API limit acted, by its limit code.",
            labels=("code",),
        )
        for code, count in sorted(report["acted"].items()):
            acted.add_metric((str(code),), int(count))
        yield acted
        yield CounterMetricFamily(
            "tether_api_token_checks", "scrypt token checks run.", value=int(report["kdf_runs"])
        )
        yield GaugeMetricFamily(
            "tether_api_token_lane_pending",
            "Token checks running or waiting now.",
            value=int(report["token_lane"]["pending"]),
        )


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]


class ApiMetrics:
    """The admin API's request metrics and its limits, in a registry of their own."""

    def __init__(self, guard: AdminGuard, routes: Callable[[], Iterable[Any]] = tuple) -> None:
        """``routes`` gives the app's routes, to name requests refused before routing."""
        self.routes = routes
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "tether_api_requests",
            "Admin API requests by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "tether_api_request_duration_seconds",
            "Seconds from request to response start, by route template.",
            ("route",),
            buckets=API_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_ApiLimitsCollector(guard))


class CountedRequests:
    """Pure ASGI middleware counting every HTTP request into ``metrics``, refusals included."""

    def __init__(self, app: Asgi, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_and_note(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = _route_template(scope, self.metrics.routes())
            method = str(scope.get("method", "?"))
            self.metrics.requests.labels(route, method, str(status["code"])).inc()
            self.metrics.duration.labels(route).observe(time.perf_counter() - started)


def _route_template(scope: Scope, routes: Iterable[Any]) -> str:
    """The matched route's path template (``/api/v1/devices/{serial}``), never the raw path.

    A request refused before routing (401, 413, 429 from the guard) is matched here against
    ``routes``, so refusals are counted under the route they aimed at.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    for candidate in routes:
        match, _ = candidate.matches(scope)
        if match == Match.FULL and isinstance(getattr(candidate, "path", None), str):
            return str(candidate.path)
    raw = scope.get("path", "")
    # Fixed, public paths the router does not mark (mounted static files, docs).
    for prefix in ("/static/", "/crl/"):
        if isinstance(raw, str) and raw.startswith(prefix):
            return prefix + "*"
    return UNMATCHED_ROUTE


def families(registry: CollectorRegistry) -> Iterable[Metric]:
    """The collected families of ``registry`` (for tests and the console's overview)."""
    return registry.collect()
