"""The cloud process: the gateway over the registry, and the feed that makes revocation instant.

Revocation must refuse the next handshake *and* drop the live sessions at once, whichever
process made the change (the API process, ``tether cloud`` commands run by an operator,
another gateway worker on another core or host). The registry's append-only audit log records
every change in commit order and stays the source of truth; each gateway worker follows it
from its last position. It reads when told the log grew (:mod:`tether.cloud.changes`:
PostgreSQL ``LISTEN/NOTIFY``, or a ``stat`` of the SQLite files), and at least every
``SAFETY_INTERVAL``, instead of every 10 ms: an idle service costs next to nothing. A
revocation, a disabled device or a deactivated CA then drops the matching sessions; a CA
change also rebuilds the TLS trust store. Each entry is dispatched in one place
(:meth:`CloudService.dispatch`), which first drops what it may change from the verdict view
(:mod:`tether.cloud.verdict_view`): a known device coming back is answered from memory, every
other handshake asks the registry. A verdict from the view is used only while the audit log
holds nothing this worker's feed has not applied (one ``max(id)`` read per handshake), so a
change committed a moment ago, whose notification is still on its way, already sends the next
handshake to the registry.

Fail closed: while the change signal cannot promise to wake the feed (the LISTEN connection is
lost) or the last read of the log failed, the worker refuses new verdicts
(``registry_feed_behind``); it accepts again only after a read of the log that began with the
signal listening, so nothing committed while it was deaf can be missed.

Lanes: the feed's registry reads run on one thread of their own (``tether-feed``), verdicts on
the authority's verdict threads, and the "last seen" bookkeeping on another thread; none of
them uses the event loop's default executor, where the API's work (admin-token KDFs) runs, so
no amount of API traffic can queue a revocation or a handshake behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from cryptography import x509

from tether.cloud.authority import RegistryAuthority
from tether.cloud.bus import Bus
from tether.cloud.changes import SAFETY_INTERVAL, ChangeSignal, signal_for
from tether.cloud.endings import Ending, ended_sessions
from tether.cloud.gateway import Gateway, GatewaySettings, HandshakeRefused, Identity
from tether.cloud.gateway.identity import certificate_fingerprint
from tether.cloud.gateway.persistence import discard_ended
from tether.cloud.observability.feed import FeedStats
from tether.cloud.policy.live import LivePolicy
from tether.cloud.registry import (
    AuditEntry,
    Registry,
)
from tether.cloud.rotation import SERVER_CERTIFICATE_ROTATED
from tether.cloud.verdict_view import DEFAULT_CAPACITY, Cached, VerdictView
from tether.errors import TetherError

log = logging.getLogger("tether.cloud")

DEFAULT_POLL_INTERVAL = SAFETY_INTERVAL  # kept for callers that pass it explicitly
RETRY_INTERVAL = 0.2  # seconds between reads while the feed is not current
AUDIT_PAGE = 500  # entries per read (Registry.audit_after's default limit)
SEEN_FLUSH_INTERVAL = 1.0  # seconds between writes of the devices' "last seen" times
T = TypeVar("T")


class CloudService:
    """One cloud process: a ``Gateway`` trusting what a ``Registry`` says, kept in step with it.

    The gateway's authority is the service itself: it asks the ``RegistryAuthority`` and then
    closes the race between a verdict read from the registry and a change the feed applied
    while that verdict was in flight. The authority notes the audit position it read *before*
    its verdict; when the verdict comes back to the event loop, every change the feed has
    already applied after that position is checked against the new identity. Changes the feed
    has not applied yet will find the session in the gateway's table, since the gateway
    registers the session without yielding to the loop after ``authorize`` returns.
    """

    def __init__(
        self,
        registry: Registry,
        gateway_settings: GatewaySettings,
        *,
        poll_interval: float = SAFETY_INTERVAL,
        bus: Bus | None = None,
        changes: ChangeSignal | None = None,
        mqtt_state: bool = False,
        verdict_view: int = DEFAULT_CAPACITY,
    ) -> None:
        # ``mqtt_state``: retained messages and persistent sessions in the registry
        # (gateway/state.py). ``tether cloud serve`` turns them on; a service built without
        # them answers Retain Available 0 and keeps no session past its connection.
        # ``verdict_view``: how many allowed verdicts to keep in memory (0: ask every time).
        self.registry = registry
        self._mqtt_state = mqtt_state
        self._detach_stores: Callable[[], None] | None = None
        self.authority = RegistryAuthority(
            registry, verdict_threads=gateway_settings.verdict_threads
        )
        self._feed_lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-feed")
        # Topic policies from the registry, re-read on the feed's lane after each change.
        self.policy = LivePolicy(registry, lane=self._feed_lane)
        self.gateway = Gateway(gateway_settings, self, policy=self.policy, bus=bus)
        self._seen_lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tether-last-seen")
        self.poll_interval = poll_interval  # the longest the feed goes without reading
        self.changes = changes if changes is not None else signal_for(registry.url)
        self._current = False  # the feed has read the log with the signal listening
        self._feed_error = False  # the last read of the audit log failed
        self._follower: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._last_seen = 0
        self._in_flight: dict[int, int] = {}  # handshake number -> feed position at its start
        self._next_handshake = 0
        self._recent: list[Ending] = []  # endings applied while handshakes were in flight
        self._trust_stale = False  # the last TLS trust reload failed; retried by the feed
        self.feed = FeedStats()  # lag, endings, time to drop (for metrics and /readyz)
        self.view = VerdictView(verdict_view)  # emptied whenever the feed is not current

    @property
    def feed_current(self) -> bool:
        """Whether the feed is current (else new verdicts are refused; see the docstring)."""
        return self._current

    # -- IdentityAuthority, for the gateway ------------------------------------------------

    def trusted_ca_certificates(self) -> Sequence[x509.Certificate]:
        """The active registered client CAs (what TLS accepts)."""
        return self.authority.trusted_ca_certificates()

    async def authorize(self, leaf: x509.Certificate) -> Identity:
        """The registry's verdict, re-checked against changes applied while it was read.

        Raises ``HandshakeRefused`` (``registry_unavailable`` when the registry is down, or the
        code of the change that ended the identity: ``certificate_revoked``,
        ``device_disabled``, ``ca_inactive``...).
        """
        if not self._current:
            self.view.clear()
            if self._feed_error:
                raise HandshakeRefused(
                    "The registry is unreachable (this worker cannot read its audit log); "
                    "refusing until it can.",
                    code="registry_unavailable",
                )
            raise HandshakeRefused(
                "This gateway worker lost its registry change notifications; refusing until "
                "it has listened again and caught up from the audit log.",
                code="registry_feed_behind",
            )
        now = dt.datetime.now(dt.UTC)
        fingerprint = certificate_fingerprint(leaf)
        # The signal itself must still be listening: a lost LISTEN is noticed by the feed's
        # next read, and until then a change may already be missing from the view.
        cached = self.view.get(fingerprint, now) if self.changes.current else None
        if cached is not None and await self._still_current(cached, fingerprint, now):
            # Every change after ``cached.position`` that could end it would have dropped it.
            self.authority.note_seen(cached.identity.name, now)
            return cached.identity
        handshake = self._next_handshake
        self._next_handshake += 1
        self._in_flight[handshake] = self._last_seen
        try:
            position, identity, cacheable = await self.authority.in_verdict_lane(
                self.authority.authorize_for_view, leaf
            )
        finally:
            del self._in_flight[handshake]
        ended = self._ending_after(position, identity)
        self._forget_old_endings()
        if ended is not None:
            raise HandshakeRefused(
                f"{identity.kind.value} {identity.name!r} was refused by a registry change "
                f"(audit entry {ended.audit_id}) made while its handshake was checked.",
                code=ended.code,
            )
        if cacheable and self._current and position >= self._last_seen:
            # Read at or after every change the feed applied: the feed drops it from here on.
            not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
            self.view.put(Cached(identity, position, not_before, not_after))
        return identity

    async def _still_current(self, cached: Cached, fingerprint: str, now: dt.datetime) -> bool:
        """Whether a verdict from the view may answer this handshake.

        Only if the audit log has nothing the feed has not applied yet: a change committed a
        moment ago (a revocation whose NOTIFY is still on its way) sends the handshake down the
        registry path, so a revocation refuses the very next handshake (invariant 6), not the
        one after the feed has read it. ``max(id)`` of the log is one indexed read, far cheaper
        than a verdict; a registry that cannot answer takes the registry path (which refuses).
        """
        if self._ending_after(cached.position, cached.identity) is not None:
            return False
        try:
            latest = await self.authority.in_verdict_lane(self.registry.last_audit_id)
        except TetherError:
            return False
        # The feed may have applied entries (and dropped this one) while the log was read.
        return latest <= self._last_seen and self.view.holds(fingerprint, cached)

    def _ending_after(self, position: int, identity: Identity) -> Ending | None:
        """An ending the feed applied after ``position`` that matches ``identity``, if any."""
        return next(
            (e for e in self._recent if e.audit_id > position and e.matches(identity)), None
        )

    def _forget_old_endings(self) -> None:
        """Keep only endings that a handshake still in flight may not have seen."""
        if not self._in_flight:
            self._recent.clear()
            return
        oldest = min(self._in_flight.values())
        self._recent = [ending for ending in self._recent if ending.audit_id > oldest]

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> int:
        """Start the gateway and the registry feed; returns the gateway's port."""
        await self.changes.start()
        self._last_seen = await self._in(self._feed_lane, self.registry.last_audit_id)
        self._current = self.changes.current
        self.feed.polled(self._last_seen)
        await self.policy.load()
        if self._mqtt_state:
            from tether.cloud.gateway.state import attach_stores
            from tether.cloud.registry.mqtt_state import RegistryMqttState

            state = RegistryMqttState.on(self.registry)
            self._detach_stores = await attach_stores(self.gateway.broker, state)
        port = await self.gateway.start()
        self._follower = asyncio.create_task(self._follow(), name="tether-registry-feed")
        self._flusher = asyncio.create_task(self._flush_seen(), name="tether-last-seen")
        return port

    async def stop(self) -> None:
        """Stop following the registry, close the gateway, then write the last "last seen"."""
        for task in (self._follower, self._flusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._follower = self._flusher = None
        await self.changes.close()
        await self.gateway.stop()
        if self._detach_stores is not None:
            self._detach_stores()
            self._detach_stores = None
        try:
            await self._in(self._seen_lane, self.authority.flush_seen)
        except TetherError as exc:
            log.error("cannot write last-seen times at shutdown (%s): %s", exc.code, exc.message)
        self.authority.close()
        self._feed_lane.shutdown(wait=False)
        self._seen_lane.shutdown(wait=False)

    @staticmethod
    async def _in(lane: ThreadPoolExecutor, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` on ``lane`` (one of the service's own threads, see above)."""
        return await asyncio.get_running_loop().run_in_executor(lane, fn, *args)

    async def apply_changes(self) -> int:
        """Act on every registry change since the last call; returns the sessions dropped.

        The feed is *current* afterwards only if the change signal was listening before the
        read began and did not reconnect during it (see the module docstring).
        """
        listening, epoch = self.changes.current, self.changes.epoch
        dropped = 0
        while True:
            entries = await self._in(self._feed_lane, self.registry.audit_after, self._last_seen)
            for entry in entries:
                dropped += await self.dispatch(entry)
            if len(entries) < AUDIT_PAGE:
                break
        self._current = listening and self.changes.current and epoch == self.changes.epoch
        self._feed_error = False
        if not self._current:
            self.view.clear()
        self.feed.polled(self._last_seen)
        return dropped

    async def dispatch(self, entry: AuditEntry) -> int:
        """The one place an audit entry acts on this worker; returns the sessions dropped."""
        self.view.apply(entry)  # first: no verdict it may change is served after this line
        if entry.action.startswith("ca."):
            self.authority.forget_cas()
            self._reload_trust()
        elif entry.action == SERVER_CERTIFICATE_ROTATED:
            # New handshakes present the new certificate; live sessions keep theirs.
            self._reload_trust()
            log.info(
                "gateway certificate reloaded (%s by %s)",
                entry.target,
                entry.actor,
                extra={"tether_code": "server_certificate_reloaded"},
            )
        ending = ended_sessions(entry)
        self._last_seen = entry.id
        count = 0
        if ending is not None:
            # Noted before the drop picks its targets: a verdict that lands after this line
            # sees the ending; one that landed before is a live session and dropped.
            if self._in_flight:
                self._recent.append(ending)
            reason = f"{entry.action} {entry.target} by {entry.actor}"
            count = await self.gateway.drop_sessions(ending.matches, reason=reason)
            # A persistent session parked while its client is away is deleted, not resumed.
            await discard_ended(self.gateway.broker, ending.matches, reason=reason)
            self.feed.ended(ending.code, count, entry.at)
        # Policy, group and attribute changes re-evaluate the live sessions they touch.
        return count + await self.policy.on_audit_entry(entry, self.gateway)

    def _reload_trust(self) -> None:
        """Rebuild the TLS trust store; a failure is logged and retried, never fatal.

        The feed must go on to the next entry whatever happens here: a revocation behind a
        CA change would otherwise wait for as long as the reload keeps failing. The verdict
        path does not depend on the trust store (it asks the registry), so a stale store
        only delays *admitting* a newly registered CA.
        """
        try:
            self.gateway.reload_trust()
        except Exception:
            self._trust_stale = True
            log.exception("rebuilding the TLS trust store failed; retrying with the next change")
        else:
            self._trust_stale = False

    async def _follow(self) -> None:
        while True:
            try:
                if self._trust_stale:
                    self._reload_trust()
                await self.apply_changes()
            except TetherError as exc:
                # The registry is unreachable: new handshakes fail closed; keep trying.
                self._current = False
                self._feed_error = True
                self.view.clear()
                self.feed.failed()
                log.error("cannot read registry changes (%s): %s", exc.code, exc.message)
            except Exception:
                # A bug must not silently end revocation for the life of the process.
                self._current = False
                self._feed_error = True
                self.view.clear()
                self.feed.failed()
                log.exception("applying registry changes failed; retrying")
            await self.changes.wait(self.poll_interval if self._current else RETRY_INTERVAL)

    async def _flush_seen(self) -> None:
        while True:
            await asyncio.sleep(SEEN_FLUSH_INTERVAL)
            try:
                await self._in(self._seen_lane, self.authority.flush_seen)
            except TetherError as exc:
                log.error("cannot write last-seen times (%s): %s", exc.code, exc.message)
            except Exception:
                log.exception("writing last-seen times failed; retrying")


class Companion(Protocol):
    """Something that runs beside the gateway on its loop (the admin API's server)."""

    async def start(self) -> int:
        """Start serving; returns the bound port."""
        ...

    async def stop(self) -> None:
        """Stop serving."""
        ...


async def serve_until_signalled(
    service: CloudService,
    *,
    on_ready: Callable[[int], None] | None = None,
    api: Companion | None = None,
    on_api_ready: Callable[[int], None] | None = None,
    endpoints: Companion | None = None,
    on_endpoints_ready: Callable[[int], None] | None = None,
    extras: Sequence[Companion] = (),
) -> None:
    """Run ``service`` (and ``api``, on the same loop) until SIGINT or SIGTERM, then stop.

    The API starts after the gateway and stops before it, so an admin call never reaches a
    process whose gateway is not following the registry. ``endpoints`` (``/metrics``,
    ``/healthz``, ``/readyz``: :mod:`tether.cloud.observability`) start last and stop first,
    so ``/readyz`` never says ready before everything it checks is up.
    """
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    port = await service.start()
    started: list[Companion] = []
    try:
        if on_ready is not None:
            on_ready(port)
        for extra in extras:  # enrollment (issue 16): after the gateway, before the API
            await extra.start()
            started.append(extra)
        if api is not None:
            api_port = await api.start()
            if on_api_ready is not None:
                on_api_ready(api_port)
        try:
            if endpoints is not None:
                endpoints_port = await endpoints.start()
                if on_endpoints_ready is not None:
                    on_endpoints_ready(endpoints_port)
            await stop.wait()
        finally:
            if endpoints is not None:
                await endpoints.stop()
            if api is not None:
                await api.stop()
    finally:
        for extra in reversed(started):
            await extra.stop()
        await service.stop()
