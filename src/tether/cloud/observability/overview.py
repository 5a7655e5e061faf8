"""The console's fleet overview: counts by state, connected now, refusals by reason, expiring.

Registry counts come from the registry's public listings (a ``total`` per status; certificates
paged once per view), "expiring soon" from the hygiene audit's expiry findings (one rule, in
:mod:`tether.cloud.hygiene`). What only the gateway knows (sessions connected now, handshakes
refused by reason) is read from its ``/metrics`` on loopback, the same numbers Prometheus
scrapes, and never from a copy kept elsewhere.

"Over the last hour": Prometheus's counters only grow, so a window is a difference between two
samples. :class:`RefusalHistory` keeps the samples this API process took (one per view, at
most one a minute is kept, an hour and a bit of them) and the overview shows the difference
between now and the oldest sample inside the hour, saying since when. For longer or exact
windows, ask Prometheus (``increase(tether_gateway_handshakes_total{result="refused"}[1h])``).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from tether.cloud.hygiene import FindingCode, HygieneFinding, HygieneOptions, audit
from tether.cloud.registry import CAStatus, CertState, DeviceStatus, Registry

WINDOW = 3600.0
KEEP_EVERY = 60.0  # seconds between two kept samples
MAX_BODY = 16 * 1024 * 1024
TIMEOUT = 3.0


@dataclass(frozen=True)
class GatewayNumbers:
    """What one scrape of the gateway says: sessions now, refusals by code since it started."""

    sessions: int
    refused: Counter[str]


def parse_gateway_metrics(text: str) -> GatewayNumbers:
    """The overview's numbers from a gateway exposition (``ValueError`` if it is not one)."""
    sessions: float | None = None
    refused: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tether_gateway_sessions":
                sessions = sample.value
            elif (
                sample.name == "tether_gateway_handshakes_total"
                and sample.labels.get("result") == "refused"
            ):
                refused[sample.labels.get("code", "?")] += int(sample.value)
    if sessions is None:
        raise ValueError("no tether_gateway_sessions in the exposition")
    return GatewayNumbers(int(sessions), refused)


def read_gateway_metrics(host: str, port: int) -> str:
    """GET ``http://host:port/metrics`` (bounded); ``OSError`` or ``ValueError`` on failure."""
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read(MAX_BODY + 1)
    finally:
        connection.close()
    if response.status != 200 or len(body) > MAX_BODY:
        raise ValueError(f"/metrics answered {response.status}")
    return body.decode()


class RefusalHistory:
    """Samples of the gateway's refusal counters, for differences over the last hour."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._samples: deque[tuple[float, datetime, Counter[str]]] = deque(
            maxlen=int(WINDOW / KEEP_EVERY) + 2
        )
        self._lock = threading.Lock()  # views run on the API's thread pool

    def add(self, refused: Counter[str]) -> tuple[Counter[str], datetime]:
        """Record a sample; returns the refusals since the oldest sample in the hour, and its
        wall-clock time. A counter that went down (the gateway restarted) starts afresh."""
        now = self._clock()
        with self._lock:
            while self._samples and now - self._samples[0][0] > WINDOW:
                self._samples.popleft()
            if not self._samples or now - self._samples[-1][0] >= KEEP_EVERY:
                self._samples.append((now, datetime.now(UTC), Counter(refused)))
            _, since, base = self._samples[0]
        if any(refused[code] < count for code, count in base.items()):
            return Counter(refused), since  # restarted: its counters began at zero
        delta = Counter({code: refused[code] - base[code] for code in refused})
        return +delta, since


@dataclass(frozen=True)
class FleetOverview:
    """What the overview page shows."""

    devices: dict[str, int]
    certificates: dict[str, int]
    cas: dict[str, int]
    expiring: tuple[HygieneFinding, ...]
    connected: int | None = None
    refusals: tuple[tuple[str, int], ...] = ()  # by code, most first
    refusals_since: datetime | None = None
    gateway_error: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


def fleet_overview(
    registry: Registry,
    *,
    gateway: Callable[[], str] | None,
    history: RefusalHistory,
    expiring_days: int = 30,
) -> FleetOverview:
    """Build the overview (blocking: run it on the API's thread pool)."""
    devices = {
        status.value: registry.list_devices(status=status, limit=1).total for status in DeviceStatus
    }
    certificates: Counter[str] = Counter({state.value: 0 for state in CertState})
    offset = 0
    while True:
        page = registry.list_certificates(offset=offset, limit=1000)
        certificates.update(cert.state.value for cert in page.items)
        offset += len(page.items)
        if not page.items or offset >= page.total:
            break
    cas: Counter[str] = Counter({status.value: 0 for status in CAStatus})
    cas.update(ca.status.value for ca in registry.list_cas())
    options = HygieneOptions(certificate_days=expiring_days, ca_days=expiring_days)
    report = audit(registry, options, live_unavailable="not needed")
    expiring = tuple(
        f
        for f in report.findings
        if f.code in (FindingCode.CERTIFICATE_EXPIRING, FindingCode.CA_EXPIRING)
    )
    base = FleetOverview(dict(devices), dict(certificates), dict(cas), expiring)
    if gateway is None:
        return _with_gateway(base, error="the API was started without the gateway's metrics")
    try:
        numbers = parse_gateway_metrics(gateway())
    except (OSError, ValueError) as exc:
        return _with_gateway(base, error=f"cannot read the gateway's metrics ({exc})")
    refused, since = history.add(numbers.refused)
    ranked = tuple(sorted(refused.items(), key=lambda item: (-item[1], item[0])))
    return FleetOverview(
        base.devices,
        base.certificates,
        base.cas,
        base.expiring,
        connected=numbers.sessions,
        refusals=ranked,
        refusals_since=since,
    )


def _with_gateway(base: FleetOverview, *, error: str) -> FleetOverview:
    return FleetOverview(
        base.devices, base.certificates, base.cas, base.expiring, gateway_error=error
    )


def readable(at: datetime, now: datetime | None = None) -> str:
    """``in 12 days``, ``3 h ago``, ``just now``: how far ``at`` is from ``now``."""
    now = now or datetime.now(UTC)
    delta = at - now
    seconds = abs(delta.total_seconds())
    if seconds < 60:
        return "just now"
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            count = int(seconds // size)
            label = f"{count} {unit}{'s' if unit == 'day' and count != 1 else ''}"
            return f"in {label}" if delta > timedelta(0) else f"{label} ago"
    return "just now"
