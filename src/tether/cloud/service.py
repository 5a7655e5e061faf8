"""The cloud process: the gateway over the registry, and the feed that makes revocation instant.

Revocation must refuse the next handshake *and* drop the live sessions at once, whichever
process made the change (the API in this process, ``tether cloud`` commands run by an operator,
another gateway process on another core). The registry's append-only audit log already records
every change in commit order, so each gateway process follows it: a cheap indexed read of the
entries after the last one seen, every ``poll_interval`` seconds. A revocation, a disabled
device or a deactivated CA then drops the matching sessions; a CA change also rebuilds the TLS
trust store. The handshake path itself always asks the registry, so a new connection is refused
even before the feed catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from tether.cloud.authority import RegistryAuthority
from tether.cloud.gateway import Gateway, GatewaySettings, Identity
from tether.cloud.registry import AuditEntry, CAStatus, Registry
from tether.errors import TetherError

log = logging.getLogger("tether.cloud")

DEFAULT_POLL_INTERVAL = 0.01


def _ended_sessions(entry: AuditEntry, registry: Registry) -> Callable[[Identity], bool] | None:
    """Which live sessions an audit entry ends, or None if it ends none."""
    details = entry.details
    if entry.action == "certificate.revoke" or (
        entry.action == "certificate.state" and details.get("to") != "active"
    ):
        return lambda identity: identity.certificate_fingerprint == entry.target
    if entry.action == "device.status" and details.get("to") == "disabled":
        return lambda identity: identity.name == entry.target
    if entry.action == "ca.status" and details.get("to") != CAStatus.ACTIVE.value:
        issuer = registry.get_ca(entry.target).certificate().subject.rfc4514_string()
        return lambda identity: identity.issuer == issuer
    return None


class CloudService:
    """One cloud process: a ``Gateway`` trusting what a ``Registry`` says, kept in step with it."""

    def __init__(
        self,
        registry: Registry,
        gateway_settings: GatewaySettings,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ) -> None:
        self.registry = registry
        self.authority = RegistryAuthority(registry)
        self.gateway = Gateway(gateway_settings, self.authority)
        self.poll_interval = poll_interval
        self._follower: asyncio.Task[None] | None = None
        self._last_seen = 0

    async def start(self) -> int:
        """Start the gateway and the registry feed; returns the gateway's port."""
        self._last_seen = await asyncio.to_thread(self.registry.last_audit_id)
        port = await self.gateway.start()
        self._follower = asyncio.create_task(self._follow(), name="tether-registry-feed")
        return port

    async def stop(self) -> None:
        """Stop following the registry, then close the gateway and its sessions."""
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        await self.gateway.stop()

    async def apply_changes(self) -> int:
        """Act on every registry change since the last call; returns the sessions dropped."""
        entries = await asyncio.to_thread(self.registry.audit_after, self._last_seen)
        dropped = 0
        for entry in entries:
            self._last_seen = entry.id
            if entry.action.startswith("ca."):
                self.gateway.reload_trust()
            ends = await asyncio.to_thread(_ended_sessions, entry, self.registry)
            if ends is not None:
                dropped += await self.gateway.drop_sessions(
                    ends, reason=f"{entry.action} {entry.target} by {entry.actor}"
                )
        return dropped

    async def _follow(self) -> None:
        while True:
            try:
                await self.apply_changes()
            except TetherError as exc:
                # The registry is unreachable: new handshakes already fail closed; keep trying.
                log.error("cannot read registry changes (%s): %s", exc.code, exc.message)
            await asyncio.sleep(self.poll_interval)


async def serve_until_signalled(
    service: CloudService, *, on_ready: Callable[[int], None] | None = None
) -> None:
    """Run ``service`` until SIGINT or SIGTERM, then stop it cleanly."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    port = await service.start()
    if on_ready is not None:
        on_ready(port)
    try:
        await stop.wait()
    finally:
        await service.stop()
