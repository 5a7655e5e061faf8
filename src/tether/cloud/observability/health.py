"""``/healthz`` (the process answers) and ``/readyz`` (it can do its job right now).

*Live* is deliberately shallow: the event loop answered, so a supervisor that restarts on a
failed liveness check restarts only a wedged process, never one whose database is briefly
away (restarting would not bring the database back, and would drop every session).

*Ready* is what a load balancer or an orchestrator should route by; every check must pass:

- ``registry``: a cheap read (the last audit id) answers within ``REGISTRY_TIMEOUT`` seconds. It
  runs on a thread of its own (never the feed's or the verdicts' lanes), and a probe still in
  flight is shared by the next request instead of starting another thread, so a scraper that
  polls fast cannot pile up threads behind a hung database.
- ``change_feed``: the feed caught up with the registry within ``feed_max_lag`` seconds
  (``metrics.feed_max_lag`` in ``cloud.json``, default 5 s: 500 polls at the default 10 ms
  interval). A feed that is behind means a revocation might not drop its sessions yet.
- ``gateway``: the MQTT listener is bound and not stopping.
- ``api``: the admin API's process is alive (when this process started one).

The answer is JSON, ``{"ready": bool, "checks": {name: {"ok": bool, "detail": str}}}``, with
status 200 or 503.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tether.cloud.observability.http import Reply
from tether.errors import TetherError

if TYPE_CHECKING:
    from tether.cloud.service import CloudService

REGISTRY_TIMEOUT = 2.0
JSON = "application/json"


@dataclass(frozen=True)
class Check:
    """One readiness check's outcome."""

    name: str
    ok: bool
    detail: str


def health_reply(checks: list[Check]) -> Reply:
    """The ``/readyz`` answer for ``checks``: 200 when all pass, else 503."""
    ready = all(check.ok for check in checks)
    body = {
        "ready": ready,
        "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
    }
    return Reply(200 if ready else 503, JSON, (json.dumps(body, sort_keys=True) + "\n").encode())


async def live() -> Reply:
    """``/healthz``: the loop answered."""
    return Reply(200, JSON, b'{"live": true}\n')


class GatewayReadiness:
    """The readiness checks of a gateway process (see the module docstring)."""

    def __init__(
        self,
        service: CloudService,
        *,
        feed_max_lag: float,
        api_alive: Callable[[], bool] | None = None,
    ) -> None:
        self.service = service
        self.feed_max_lag = feed_max_lag
        self.api_alive = api_alive
        self._lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-health")
        self._probe: asyncio.Future[int] | None = None

    async def checks(self) -> list[Check]:
        """Run every check; never raises."""
        checks = [await self._registry(), self._feed(), self._gateway()]
        if self.api_alive is not None:
            alive = self.api_alive()
            checks.append(Check("api", alive, "process alive" if alive else "process exited"))
        return checks

    async def reply(self) -> Reply:
        """``/readyz``."""
        return health_reply(await self.checks())

    async def _registry(self) -> Check:
        if self._probe is None or self._probe.done():
            loop = asyncio.get_running_loop()
            self._probe = loop.run_in_executor(self._lane, self.service.registry.last_audit_id)
        try:
            position = await asyncio.wait_for(asyncio.shield(self._probe), REGISTRY_TIMEOUT)
        except TimeoutError:
            return Check("registry", False, f"no answer within {REGISTRY_TIMEOUT:g} s")
        except TetherError as exc:
            return Check("registry", False, f"{exc.code}: {exc.message}")
        except Exception as exc:
            return Check("registry", False, f"{type(exc).__name__}: {exc}")
        return Check("registry", True, f"reachable (last audit id {position})")

    def _feed(self) -> Check:
        lag = self.service.feed.lag()
        current = self.service.feed_current  # False: refusing verdicts (fail closed)
        ok = lag <= self.feed_max_lag and current
        return Check(
            "change_feed",
            ok,
            f"caught up {lag:.3f} s ago (position {self.service.feed.position}; "
            f"max {self.feed_max_lag:g} s)"
            + ("" if current else "; not hearing registry changes: refusing handshakes"),
        )

    def _gateway(self) -> Check:
        listening = self.service.gateway.listening
        return Check("gateway", listening, "listening" if listening else "not listening")

    def close(self) -> None:
        self._lane.shutdown(wait=False, cancel_futures=True)
