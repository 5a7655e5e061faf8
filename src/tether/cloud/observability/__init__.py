"""Watching a running cloud: metrics, health, JSON logs (issue 20).

The gateway and the service keep plain counters (``tether.cloud.gateway.stats``,
:mod:`tether.cloud.observability.feed`); this package turns them into Prometheus families
(:mod:`.metrics`), answers ``/healthz`` and ``/readyz`` (:mod:`.health`) on a small plain-HTTP
listener bound to loopback (:mod:`.http`), and formats log records as JSON lines
(:mod:`.logs`). Nothing in the domain imports this package's Prometheus side.
"""
