"""Who may start a TLS handshake: the connection caps and the pending table.

(See :mod:`tether.cloud.gateway.server` for the bounds and why.) A connection is *pending*
from accept until its CONNECT is accepted; the table is oldest first, so the pending cap can
evict the oldest connection still in its TLS handshake. Used from the gateway's loop only.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from tether.cloud.gateway.limits import LimitCode, LimitCounters
from tether.cloud.gateway.settings import GatewaySettings


@dataclass
class _Pending:
    """A connection whose CONNECT is not accepted yet: where from, and whether in TLS still."""

    host: str
    in_tls: bool = True


class Admission:
    """The pending connections by task and by source address, and the admission rule."""

    def __init__(self, settings: GatewaySettings, counters: LimitCounters) -> None:
        self.settings = settings
        self.counters = counters
        self.pending: dict[asyncio.Task[None], _Pending] = {}  # oldest first
        self.by_host: Counter[str] = Counter()

    def enter(self, task: asyncio.Task[None], host: str) -> None:
        """An admitted connection's handler task starts pending."""
        self.pending[task] = _Pending(host)
        self.by_host[host] += 1

    def tls_done(self, task: asyncio.Task[None] | None) -> None:
        """Its TLS handshake is done: no longer a candidate for eviction."""
        state = self.pending.get(task) if task is not None else None
        if state is not None:
            state.in_tls = False

    def admit(self, host: str, peer: str, open_now: int, max_connections: int) -> bool:
        """Whether a just-accepted connection may proceed (evicting the oldest if need be)."""
        if open_now >= max_connections:
            self.counters.hit(
                LimitCode.CONNECTION_CAP,
                f"{open_now} connections open (max_connections={max_connections}); "
                "new connection closed",
                peer=peer,
            )
            return False
        if self.by_host[host] >= self.settings.max_pending_per_address:
            self.counters.hit(
                LimitCode.PENDING_PER_ADDRESS,
                f"{self.by_host[host]} connections from {host} have not finished "
                f"TLS + CONNECT (max_pending_per_address={self.settings.max_pending_per_address})"
                "; new connection closed",
                peer=peer,
            )
            return False
        if len(self.pending) < self.settings.max_pending_connections:
            return True
        victim = next((task for task, state in self.pending.items() if state.in_tls), None)
        self.counters.hit(
            LimitCode.PENDING_CAP,
            f"{len(self.pending)} connections have not finished TLS + CONNECT "
            f"(max_pending_connections={self.settings.max_pending_connections}); "
            + ("evicted the oldest still in its TLS handshake" if victim else "closed the new one"),
            peer=peer,
        )
        if victim is None:
            return False
        self.leave(victim)
        victim.cancel()
        return True

    def leave(self, task: asyncio.Task[None] | None) -> None:
        """The connection is no longer pending (CONNECT accepted, closed or evicted)."""
        state = self.pending.pop(task, None) if task is not None else None
        if state is not None:
            self.by_host[state.host] -= 1
            if self.by_host[state.host] <= 0:
                del self.by_host[state.host]
