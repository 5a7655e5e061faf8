"""Handing a persistent session from one worker to another, over the bus (issue 17).

A persistent session lives in one worker at a time: live there, or parked there as an
:class:`~tether.cloud.gateway.persistence.OfflineSession` stand-in that queues into the
shared store. When its client connects to another worker, that worker must read the store
only after the old holder has stopped queueing and written everything it accepted, or a
queued QoS 1 message is missed (written after the read) or delivered twice (queued again by
a stand-in that never stopped). The protocol, on two bus channels:

- ``session`` (the takeover claim, :mod:`.takeover`): every worker records the claiming
  worker as the key's *holder*. The holder of a stand-in for that key stops it (no more
  queueing); a live session here that is older than the claim is marked *claimed away*, so
  that when it ends (the takeover disconnects it) it is saved but not parked.
- ``parked``: ``parked`` when a worker parks a stand-in (at the end of a connection or at
  start, ``restore``), ``released`` once a session this worker held is gone from it and every
  store write it made for it is committed (announced from the sessions thread, after the
  writes queued before it: one thread, in order). A stand-in hearing of a newer ``parked``
  elsewhere for its key stops (one stand-in per key in the cluster: the latest parker's).
- the connecting worker, before it reads the store (``PersistentSessions.begin``), waits for
  the recorded holder's ``released``, at most ``HANDOVER_WAIT`` seconds.
- ``gone``: a worker stopping (its bus closing) stops its stand-ins, waits for its store
  writes, and says it holds nothing any more, so no connect waits for it.

Guarantee: with both workers alive and the bus up, every message the old holder queued is in
the store before the new one reads it, and the old one queues nothing after; so each queued
QoS 1/2 message is delivered once, in order. Limits: a holder that is dead (or whose bus is
down) never answers, so the connect waits ``HANDOVER_WAIT`` and reads what is there (what the
dead worker had not written is lost; it queues nothing more; a worker that stops normally
says ``gone``, see above); a worker started after a
stand-in was parked elsewhere has not heard of it (no wait: the pre-handover race); messages
published between the old stand-in stopping and the new session subscribing again are not
queued (the same gap as a reconnect to the same worker); two stand-ins restored at once by
two starting workers both queue until the older hears the newer's ``parked`` (milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING

from tether.cloud.gateway.events import log_event
from tether.cloud.gateway.takeover import CHANNEL as CLAIM_CHANNEL
from tether.cloud.gateway.takeover import Claim

if TYPE_CHECKING:
    from tether.cloud.bus.base import Bus
    from tether.cloud.gateway.persistence import PersistentSessions

CHANNEL = "parked"
HANDOVER_WAIT = 3.0  # seconds a connect waits for the previous holder's "released"
MAX_HOLDERS = 100_000  # remote holders remembered (a dead worker's entries age out)
Key = tuple[str, str]


class Handover:
    """One worker's side of the protocol in the module docstring."""

    def __init__(self, owner: PersistentSessions, bus: Bus) -> None:
        self._owner = owner
        self._bus = bus
        self.worker_id = bus.worker_id
        self._holders: dict[Key, str] = {}  # key -> the other worker that holds the session
        self._waiters: dict[Key, asyncio.Future[None]] = {}
        self._claimed_away: set[Key] = set()
        self._live_since: dict[Key, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        bus.listen(CLAIM_CHANNEL, self._claimed)
        bus.listen(CHANNEL, self._heard)
        bus.on_closing(self._leaving)

    # -- what this worker does ---------------------------------------------------------------

    def holder(self, key: Key) -> str | None:
        """The other worker this one believes holds ``key``'s session, if any."""
        return self._holders.get(key)

    def connected(self, key: Key) -> None:
        """A session of ``key`` was accepted here (its claim went out just before)."""
        self._loop = asyncio.get_running_loop()
        self._live_since[key] = time.time()
        self._claimed_away.discard(key)

    async def wait_released(self, key: Key) -> None:
        """Before reading the store: wait (bounded) until another holder has let go."""
        holder = self._holders.get(key)
        if holder is None:
            return
        waiter = self._waiters.get(key)
        if waiter is None:
            waiter = self._waiters[key] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), HANDOVER_WAIT)
        except TimeoutError:
            log_event(
                logging.WARNING,
                "session_handover_timeout",
                f"worker {holder} did not release the session within {HANDOVER_WAIT} s "
                "(stopped or unreachable): resuming from what the store holds",
                peer="-",
                identity=key[1],
            )
            if self._holders.get(key) == holder:
                del self._holders[key]
        finally:
            if self._waiters.get(key) is waiter and waiter.done():
                del self._waiters[key]

    def claimed_away(self, key: Key) -> bool:
        """Whether the live session of ``key`` here was taken over by another worker."""
        return key in self._claimed_away

    def parked(self, key: Key, at: float) -> None:
        """A stand-in for ``key`` was parked here at ``at``."""
        self._ended(key)
        self._holders.pop(key, None)
        self._announce("parked", key, at)

    def release(self, key: Key) -> None:
        """This worker let go of ``key``: announce it once every store write before is done."""
        self._ended(key)
        loop = self._loop or asyncio.get_running_loop()

        def after_writes() -> None:  # on the sessions thread, after what was queued before
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
                loop.call_soon_threadsafe(self._announce, "released", key, time.time())

        with contextlib.suppress(RuntimeError):  # the sessions thread is shut down: stopping
            self._owner.submit(after_writes)

    def _ended(self, key: Key) -> None:
        if not self._owner.is_live(key):  # else a newer connection of it lives here now
            self._live_since.pop(key, None)
            self._claimed_away.discard(key)

    async def _leaving(self) -> None:
        """The bus is closing (the worker stops): stop the stand-ins, commit, say ``gone``."""
        for key in self._owner.parked_keys():
            self._owner.stop_offline(key)
        await self._owner.call(lambda: None)  # every store write queued before is committed
        self._announce("gone", ("", ""), time.time())

    # -- what the other workers say ----------------------------------------------------------

    def _claimed(self, data: bytes) -> None:
        try:
            claim = Claim.decode(data)
        except ValueError:
            return  # the session table logs it
        key = (claim.kind, claim.name)
        self._remember(key, claim.worker)
        if self._owner.stop_offline(key):
            self.release(key)
            return
        since = self._live_since.get(key)
        if since is not None and (since, self.worker_id) < (claim.at, claim.worker):
            self._claimed_away.add(key)

    def _heard(self, data: bytes) -> None:
        try:
            what, kind, name, worker, at = json.loads(data)
            key = (str(kind), str(name))
            at = float(at)
        except (TypeError, ValueError) as exc:
            log_event(logging.WARNING, "session_handover_malformed", str(exc), peer="bus")
            return
        if what == "parked":
            mine = self._owner.parked_at(key)
            if mine is not None and (mine, self.worker_id) > (at, str(worker)):
                return  # ours is the newer stand-in: it stays, theirs stops on our "parked"
            if mine is not None and self._owner.stop_offline(key):
                self.release(key)
            self._remember(key, str(worker))
        elif what == "released" and self._holders.get(key) == worker:
            self._let_go(key)
        elif what == "gone":
            for held, holder in list(self._holders.items()):
                if holder == worker:
                    self._let_go(held)

    def _let_go(self, key: Key) -> None:
        del self._holders[key]
        waiter = self._waiters.get(key)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _remember(self, key: Key, worker: str) -> None:
        self._holders.pop(key, None)
        if len(self._holders) >= MAX_HOLDERS:
            del self._holders[next(iter(self._holders))]
        self._holders[key] = worker

    def _announce(self, what: str, key: Key, at: float) -> None:
        payload = json.dumps([what, key[0], key[1], self.worker_id, at]).encode("utf-8")
        self._bus.announce(CHANNEL, payload)
