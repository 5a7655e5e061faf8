"""Bookkeeping for the API's bounds: reason codes, counters and per-address state.

Pure and synchronous (no I/O, no event loop): ``guard`` drives it from the event loop, one
call at a time, so nothing here needs a lock. Every structure is bounded: the per-address
table keeps at most ``tracked_addresses`` entries (least recently seen evicted), so an
attacker with many addresses costs memory in proportion to that number, not to its traffic.

Addresses are the TCP peer as uvicorn reports it. ``X-Forwarded-For`` is never trusted (any
client could send one); behind a reverse proxy every client shares the proxy's address, so
limit there. An IPv6 peer is counted by its /64 prefix: one host usually owns a whole /64, and
counting single addresses would give it 2**64 fresh budgets.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum


class LimitCode(StrEnum):
    """Stable reason codes logged (``tether_code``) and counted when an API bound acts."""

    CREDENTIAL_MISSING = "api_credential_missing"  # 401 before the body is read
    CREDENTIAL_INVALID = "api_credential_invalid"  # 401: a presented credential failed
    AUTH_THROTTLED = "api_auth_throttled"  # 429: too many failures from one address
    RATE_LIMITED = "api_rate_limited"  # 429: one address started too many KDF checks
    TOKEN_LANE_FULL = "api_token_lane_full"  # noqa: S105  (503: every token-check slot taken)
    BODY_TOO_LARGE = "api_body_too_large"  # 413: declared or streamed body over the limit
    FAILURE_AUDIT_SUPPRESSED = "api_failure_audit_suppressed"  # failure audit rows capped
    CONCURRENCY_LIMITED = "api_concurrency_limited"  # 503 from uvicorn: max_connections
    ADDRESSES_EVICTED = "api_addresses_evicted"  # tracked_addresses full: oldest forgotten


def address_key(host: str | None) -> str:
    """The key an address is counted under: IPv4 as is, IPv6 by its /64, else "unknown"."""
    if not host:
        return "unknown"
    try:
        parsed = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


@dataclass
class AddressState:
    """One address's window of failures and its bucket of scrypt checks."""

    window_start: float
    kdf_tokens: float
    kdf_refilled: float
    failures: int = 0
    audited_first: bool = False
    audited_throttle: bool = False
    logged: set[LimitCode] = field(default_factory=set)


class AddressBook:
    """Per-address limits: failures per fixed window, and a token bucket for scrypt checks.

    ``failures_per_window`` failed credentials are answered normally; from then until the
    window ends the address is *throttled* (the guard answers 429 without checking anything
    that costs). Each address may start ``kdf_burst`` scrypt checks at once, refilled at
    ``kdf_per_second``.
    """

    def __init__(
        self,
        *,
        entries: int,
        window: float,
        failures_per_window: int,
        kdf_burst: int,
        kdf_per_second: float,
    ) -> None:
        self._entries = entries
        self.window = window
        self.failures_per_window = failures_per_window
        self._kdf_burst = float(kdf_burst)
        self._kdf_rate = kdf_per_second
        self._states: OrderedDict[str, AddressState] = OrderedDict()
        self.evicted = 0  # addresses forgotten because the table was full

    def __len__(self) -> int:
        return len(self._states)

    def state(self, key: str, now: float) -> AddressState:
        """The state of ``key`` at ``now`` (a new window resets its failures and flags)."""
        state = self._states.get(key)
        if state is None:
            state = AddressState(window_start=now, kdf_tokens=self._kdf_burst, kdf_refilled=now)
            self._states[key] = state
            while len(self._states) > self._entries:
                self._states.popitem(last=False)
                self.evicted += 1
        else:
            self._states.move_to_end(key)
            if now - state.window_start >= self.window:
                state.window_start = now
                state.failures = 0
                state.audited_first = state.audited_throttle = False
                state.logged.clear()
        return state

    def throttled_for(self, state: AddressState, now: float) -> float | None:
        """Seconds until ``state``'s window ends if it is throttled, else None."""
        if state.failures < self.failures_per_window:
            return None
        return max(state.window_start + self.window - now, 0.0)

    def take_kdf(self, state: AddressState, now: float) -> float | None:
        """Spend one scrypt check; None if allowed, else seconds until one is available."""
        elapsed = max(now - state.kdf_refilled, 0.0)
        state.kdf_tokens = min(self._kdf_burst, state.kdf_tokens + elapsed * self._kdf_rate)
        state.kdf_refilled = now
        if state.kdf_tokens < 1.0:
            return (1.0 - state.kdf_tokens) / self._kdf_rate
        state.kdf_tokens -= 1.0
        return None


class Counters:
    """How often each bound acted since start-up (reported by ``GET /api/v1/limits``)."""

    def __init__(self) -> None:
        self._counts: dict[LimitCode, int] = dict.fromkeys(LimitCode, 0)

    def add(self, code: LimitCode, n: int = 1) -> None:
        self._counts[code] += n

    def get(self, code: LimitCode) -> int:
        return self._counts[code]

    def as_dict(self) -> dict[str, int]:
        return {code.value: count for code, count in self._counts.items()}


class FailureAuditBudget:
    """At most ``rows`` audit rows about failed credentials per window, all addresses together.

    Past the budget, failures are only counted; the first failure of the next window that
    may write also writes one summary row with how many went unrecorded.
    """

    def __init__(self, *, rows: int, window: float) -> None:
        self._rows = rows
        self._window = window
        self._start = float("-inf")
        self._used = 0
        self.suppressed = 0  # failures not audited in the current window
        self.carried = 0  # suppressed failures of past windows, not yet summarised

    def _roll(self, now: float) -> None:
        if now - self._start >= self._window:
            self._start = now
            self._used = 0
            self.carried += self.suppressed
            self.suppressed = 0

    def allow(self, now: float) -> bool:
        """Spend one row if the window has one left; otherwise count a suppressed failure."""
        self._roll(now)
        if self._used < self._rows:
            self._used += 1
            return True
        self.suppressed += 1
        return False

    def take_carried(self) -> int:
        """The suppressed count to summarise now (and forget)."""
        carried, self.carried = self.carried, 0
        return carried
