"""What the change feed counts: how current it is, what it ended, and how fast it dropped.

Plain numbers kept by :class:`~tether.cloud.service.CloudService` on its event loop (no
metrics library here: the service does not import Prometheus); the collector in
:mod:`tether.cloud.observability.metrics` reads them at scrape time and the health endpoint
(:mod:`tether.cloud.observability.health`) asks :meth:`FeedStats.lag` whether the feed is
current.

*Time to drop* is measured from the audit entry's commit time (the registry's clock) to the
moment the last matching session has closed (this process's clock): on one machine that is the
operator-visible delay of a revocation; across machines it includes their clock offset.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType

from tether.cloud.gateway.stats import BucketHistogram

# Seconds from a revocation's commit to its sessions closed: the benchmark's p50 is ~5 ms,
# its p99 ~50 ms; the last buckets catch a feed that fell behind.
DROP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class FeedStats:
    """The change feed's position, health and endings. Event-loop only."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last_ok: float | None = None  # monotonic time of the last successful poll
        self.position = 0  # the last audit id applied
        self.failures = 0  # polls that failed (registry unreachable, or a bug, logged)
        self._endings: Counter[str] = Counter()  # by refusal code
        self._dropped: Counter[str] = Counter()
        self.drop_seconds = BucketHistogram(DROP_BUCKETS)

    def polled(self, position: int) -> None:
        """A poll read the registry and applied everything up to ``position``."""
        self.last_ok = time.monotonic()
        self.position = position

    def failed(self) -> None:
        """A poll failed; ``lag`` keeps growing until one succeeds."""
        self.failures += 1

    def lag(self) -> float:
        """Seconds since the feed last caught up with the registry (since start if never)."""
        return time.monotonic() - (self.last_ok if self.last_ok is not None else self.started)

    def ended(self, code: str, dropped: int, committed_at: datetime) -> None:
        """A registry change ended identities (``code``) and ``dropped`` sessions are closed."""
        self._endings[code] += 1
        if dropped:
            self._dropped[code] += dropped
            at = committed_at if committed_at.tzinfo else committed_at.replace(tzinfo=UTC)
            self.drop_seconds.observe(max((datetime.now(UTC) - at).total_seconds(), 0.0))

    def endings(self) -> Mapping[str, int]:
        """Registry changes that ended identities, by refusal code (read-only)."""
        return MappingProxyType(dict(self._endings))

    def dropped(self) -> Mapping[str, int]:
        """Live sessions dropped by those changes, by refusal code (read-only)."""
        return MappingProxyType(dict(self._dropped))
