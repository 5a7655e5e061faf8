"""What the gateway counts for operators: handshake outcomes, their latency, messages routed.

Plain numbers on the event loop, no metrics library: :mod:`tether.cloud.observability` reads
them at scrape time and turns them into Prometheus families, so the gateway's hot path pays an
integer increment, never a lock or a label lookup in a registry.

**One place decides a handshake's outcome.** Every refusal already goes through
:func:`~tether.cloud.gateway.events.log_event` (or a limit's counter) with its stable reason
code, wherever it happens: the TLS layer, the authority's verdict, the CONNECT checks in the
session. Rather than a second call next to each of those lines (a second list of refusals that
could disagree with the log), the connection's task carries a :class:`HandshakeAttempt` in a
context variable, and :func:`note_event` (called by ``log_event`` and by the limit counters)
settles it: ``mqtt_connected`` is an acceptance, the first event at WARNING or above before it
is a refusal with that code. A connection that ends with neither (the peer went away) is
counted as ``aborted`` with its last code. Events after the acceptance do not touch it, and
events outside a connection's task (the feed dropping sessions) find no attempt.
"""

from __future__ import annotations

import bisect
import contextvars
import enum
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from types import MappingProxyType

ACCEPTED_CODE = "mqtt_connected"
# Seconds from TCP accept to CONNACK or refusal: loopback handshakes take a few ms, a
# PKCS#11 device over a slow link a second or more, and the deadlines end at 3-5 s.
MAX_CONTESTED = 1024  # contested certificates remembered
MAX_CONTESTED_HOSTS = 16  # hosts remembered per contested certificate
CONTESTED_TAKEOVERS = 2  # take-overs from another host before a certificate counts as shared
HANDSHAKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class HandshakeResult(enum.StrEnum):
    """How a connection attempt ended its handshake (TLS + verdict + CONNECT)."""

    ACCEPTED = "accepted"
    REFUSED = "refused"
    ABORTED = "aborted"  # the peer went away or was evicted without a refusal code


class BucketHistogram:
    """A cumulative histogram with fixed upper bounds (Prometheus ``le`` semantics)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self._counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` for each bound, then ``(inf, count)``."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self._counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class GatewayStats:
    """The gateway's counters for operators. Event-loop only."""

    def __init__(self) -> None:
        self._handshakes: Counter[tuple[HandshakeResult, str]] = Counter()
        self.handshake_seconds = BucketHistogram(HANDSHAKE_BUCKETS)
        self.messages_received = 0  # PUBLISH (and Wills) routed by the broker
        self.messages_delivered = 0  # copies queued to subscribers
        self.messages_dropped = 0  # copies a subscriber refused (closing, slow, too big)
        # Certificates whose session was taken over from another host (two devices sharing
        # one identity): fingerprint -> (identity, hosts, take-overs), bounded (oldest
        # forgotten first).
        self._contested: dict[str, tuple[str, set[str], int]] = {}

    def handshake(self, result: HandshakeResult, code: str, seconds: float) -> None:
        """Count one finished handshake and its latency."""
        self._handshakes[(result, code)] += 1
        self.handshake_seconds.observe(seconds)

    def handshakes(self) -> Mapping[tuple[HandshakeResult, str], int]:
        """Every ``(result, code)`` seen so far with its count, read-only."""
        return MappingProxyType(dict(self._handshakes))

    def taken_over(self, fingerprint: str, identity: str, old_host: str, new_host: str) -> None:
        """A session of ``fingerprint`` was taken over by the same certificate; noted if the
        host differs (a device reconnecting from where it was is not news)."""
        if old_host == new_host:
            return
        _, hosts, count = self._contested.pop(fingerprint, None) or (identity, set(), 0)
        if len(hosts) < MAX_CONTESTED_HOSTS:
            hosts.update((old_host, new_host))
        self._contested[fingerprint] = (identity, hosts, count + 1)  # most recent last
        while len(self._contested) > MAX_CONTESTED:
            del self._contested[next(iter(self._contested))]

    def contested(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """``(fingerprint, identity, hosts)`` of certificates taken over from another host at
        least ``CONTESTED_TAKEOVERS`` times: one take-over is a device that changed networks
        before its old connection timed out; two devices sharing a key keep taking turns."""
        return [
            (fp, name, tuple(sorted(hosts)))
            for fp, (name, hosts, count) in self._contested.items()
            if count >= CONTESTED_TAKEOVERS
        ]

    def attempt(self) -> HandshakeAttempt:
        """Start tracking the connection of the current task (see the module docstring)."""
        attempt = HandshakeAttempt(self)
        _current.set(attempt)
        return attempt


class HandshakeAttempt:
    """One connection's handshake, settled once by the first deciding event."""

    __slots__ = ("_stats", "last_code", "settled", "started")

    def __init__(self, stats: GatewayStats) -> None:
        self._stats = stats
        self.started = time.monotonic()
        self.settled = False
        self.last_code = "connection_closed"

    def note(self, code: str, level: int) -> None:
        """An event of this connection: settle the attempt if it decides it."""
        if self.settled:
            return
        self.last_code = code
        if code == ACCEPTED_CODE:
            self._settle(HandshakeResult.ACCEPTED, code)
        elif level >= logging.WARNING:
            self._settle(HandshakeResult.REFUSED, code)

    def finish(self) -> None:
        """The connection ended: count it as aborted if nothing settled it."""
        if not self.settled:
            self._settle(HandshakeResult.ABORTED, self.last_code)

    def _settle(self, result: HandshakeResult, code: str) -> None:
        self.settled = True
        self._stats.handshake(result, code, time.monotonic() - self.started)


_current: contextvars.ContextVar[HandshakeAttempt | None] = contextvars.ContextVar(
    "tether_handshake_attempt", default=None
)


def note_event(code: str, level: int) -> None:
    """Tell the current connection's attempt (if any) about an event with ``code``."""
    attempt = _current.get()
    if attempt is not None:
        attempt.note(code, level)
