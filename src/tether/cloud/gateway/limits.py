"""The gateway's bounds in action: which limit acted, how often, and the report for operators.

Every limit is a setting (:class:`~tether.cloud.gateway.settings.GatewaySettings`, the
``gateway`` section of ``cloud.json``). When one acts, the gateway counts it here under a
stable :class:`LimitCode` and logs a line with that code. A flood can make a limit act
thousands of times a second, so the log is bounded too: the first hit of a code is logged at
once, later hits at most once per ``LOG_INTERVAL`` per code, with how many were not logged in
between (the counters are exact). ``Gateway.limits_report()`` returns the settings, the
counters and the current levels as a frozen :class:`LimitsReport` (for a stats endpoint).

The file-descriptor soft limit is raised to the hard limit when the gateway starts (each
connection is one descriptor; Debian's default soft limit of 1,024 is what ~1,100 idle
connections exhausted), and the connection cap is clamped below what the descriptors allow.
"""

from __future__ import annotations

import enum
import logging
import resource
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from tether.cloud.gateway.events import log_event, logger
from tether.cloud.gateway.stats import note_event

LOG_INTERVAL = 1.0  # seconds between two log lines of the same limit code
FD_RESERVE = 64  # descriptors kept for the registry, log files, the API and the listener


class LimitCode(enum.StrEnum):
    """What acted; the value is the reason code in the log line and the counter's name."""

    CONNECTION_CAP = "connection_cap_reached"  # new connection closed at accept
    PENDING_CAP = "handshake_cap_reached"  # oldest connection still in its TLS handshake evicted
    PENDING_PER_ADDRESS = "handshake_per_address_cap_reached"  # new connection closed at accept
    HANDSHAKE_DEADLINE = "handshake_deadline"  # no TLS handshake within handshake_timeout
    CONNECT_DEADLINE = "mqtt_connect_timeout"  # no CONNECT within connect_timeout
    AUTHORITY_DEADLINE = "authority_timeout"  # no verdict within connect_timeout
    SUBSCRIBE_FILTERS = "subscribe_filters_exceeded"  # SUBACK 0x97 beyond the per-packet cap
    SESSION_SUBSCRIPTIONS = "session_subscriptions_exceeded"  # SUBACK 0x97, session full
    RECEIVE_MAXIMUM_WAIT = "receive_maximum_wait"  # a QoS 1 message waits for the window
    SLOW_CONSUMER_DROP = "slow_consumer_qos0_dropped"  # QoS 0 message dropped, buffer full
    SLOW_CONSUMER_DISCONNECT = "slow_consumer_disconnected"  # QoS 1 queue full: 0x97
    OVERSIZE_FOR_CLIENT = "message_exceeds_client_maximum"  # dropped per client's max size


class LimitCounters:
    """How often each limit acted, and its rate-limited log line. Event-loop only."""

    def __init__(self) -> None:
        self._counts: Counter[LimitCode] = Counter()
        self._last_logged: dict[LimitCode, float] = {}
        self._unlogged: Counter[LimitCode] = Counter()

    def hit(
        self,
        code: LimitCode,
        message: str,
        *,
        peer: str,
        identity: str | None = None,
        level: int = logging.WARNING,
    ) -> None:
        """Count one action of ``code`` and log it unless its code was logged just now."""
        self._counts[code] += 1
        note_event(code.value, level)  # even when the log line below is rate-limited
        now = time.monotonic()
        last = self._last_logged.get(code)
        if last is not None and now - last < LOG_INTERVAL:
            self._unlogged[code] += 1
            return
        skipped = self._unlogged.pop(code, 0)
        self._last_logged[code] = now
        if skipped:
            message += f" ({skipped} more since the last line, {self._counts[code]} in all)"
        log_event(level, code.value, message, peer=peer, identity=identity)

    def count(self, code: LimitCode) -> int:
        """How often ``code`` acted since the gateway started."""
        return self._counts[code]

    def snapshot(self) -> Mapping[str, int]:
        """Every code with its count (zero included), read-only."""
        return MappingProxyType({code.value: self._counts[code] for code in LimitCode})


@dataclass(frozen=True)
class LimitsReport:
    """The gateway's limits, how often each acted, and the levels they bound right now.

    ``settings`` maps each limit setting to its value; ``counters`` each :class:`LimitCode`
    value to its count; ``max_connections`` is the connection cap in force (the setting,
    clamped below the descriptor limit ``fd_limit``).
    """

    settings: Mapping[str, int | float]
    counters: Mapping[str, int]
    open_connections: int
    pending_connections: int
    sessions: int
    subscriptions: int
    max_connections: int
    fd_limit: int

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready data."""
        return {
            "settings": dict(self.settings),
            "counters": dict(self.counters),
            "open_connections": self.open_connections,
            "pending_connections": self.pending_connections,
            "sessions": self.sessions,
            "subscriptions": self.subscriptions,
            "max_connections": self.max_connections,
            "fd_limit": self.fd_limit,
        }


def raise_fd_limit() -> int:
    """Raise this process's descriptor soft limit to its hard limit; returns the soft limit.

    Logs one line either way (``fd_limit_raised`` or ``fd_limit``) so an operator sees what
    the connection cap is up against. Never fails: a refused raise keeps the old limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        logger.info(
            "[fd_limit] file descriptor limit %s (already the hard limit)",
            soft,
            extra={"tether_code": "fd_limit"},
        )
        return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        logger.warning(
            "[fd_limit] cannot raise the file descriptor limit from %d to %d (%s)",
            soft,
            target,
            exc,
            extra={"tether_code": "fd_limit"},
        )
        return int(soft)
    logger.info(
        "[fd_limit_raised] file descriptor limit raised from %d to %d (the hard limit)",
        soft,
        target,
        extra={"tether_code": "fd_limit_raised"},
    )
    return int(target)


def connection_cap(configured: int, fd_limit: int) -> int:
    """The connection cap in force: the setting, below what the descriptors allow.

    Logs ``connection_cap_clamped`` when the descriptors are the tighter bound.
    """
    allowed = max(fd_limit - FD_RESERVE, 1)
    if configured <= allowed:
        return configured
    logger.warning(
        "[connection_cap_clamped] max_connections %d exceeds what %d file descriptors allow; "
        "capping at %d (raise the hard limit, e.g. LimitNOFILE= in the unit file)",
        configured,
        fd_limit,
        allowed,
        extra={"tether_code": "connection_cap_clamped"},
    )
    return allowed
