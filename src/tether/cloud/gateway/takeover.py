"""One session per client id, on this worker and across every worker sharing the bus.

MQTT 5 says a new connection with a client id already in use takes the session over: the old
one gets DISCONNECT 0x8E Session taken over. On one worker the session table decides. With
several workers (or hosts), the worker that accepts a CONNECT announces a *claim* on the bus
(``session`` channel: kind, name, when, which worker); a worker holding a session for that
identity that is older than the claim sends it 0x8E. "Older" compares the claim's wall-clock
time, then the worker ids, so two connections racing on two workers end with exactly one
survivor (the later claim) wherever the announcements cross. Clocks of different hosts are
assumed to agree within the time between two connects of one client (NTP: milliseconds).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from mqtt5 import DisconnectReasonCode

from tether.cloud.gateway.events import log_event
from tether.cloud.gateway.session import Session

CHANNEL = "session"
Key = tuple[str, str]  # (identity kind, name)


@dataclass(frozen=True, slots=True)
class Claim:
    """ "This identity's session now lives here": what a worker announces at CONNECT."""

    kind: str
    name: str
    at: float
    worker: str
    peer: str
    fingerprint: str

    def encode(self) -> bytes:
        """The claim as the bus carries it."""
        return json.dumps(
            [self.kind, self.name, self.at, self.worker, self.peer, self.fingerprint]
        ).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes) -> Claim:
        """The inverse of :meth:`encode`; ``ValueError`` for anything else."""
        try:
            kind, name, at, worker, peer, fingerprint = json.loads(data)
            return cls(str(kind), str(name), float(at), str(worker), str(peer), str(fingerprint))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"malformed session claim ({exc})") from exc


class SessionTable:
    """The connected sessions of this worker by identity, and the cluster-wide takeover rule.

    ``on_taken_over(previous, by_peer, fingerprint)`` is told of every takeover (the stats
    keep the same-certificate ones, a sign of a cloned identity).
    """

    def __init__(
        self,
        worker_id: str,
        announce: Callable[[bytes], None] | None,
        on_taken_over: Callable[[Session, str, str], None],
    ) -> None:
        self.worker_id = worker_id
        self._announce = announce
        self._on_taken_over = on_taken_over
        self._by_key: dict[Key, tuple[Session, float]] = {}

    def register(self, session: Session) -> None:
        """``session``'s CONNECT was accepted: take over an older one here, claim it elsewhere."""
        key = (session.identity.kind.value, session.identity.name)
        held = self._by_key.get(key)
        if held is not None and held[0] is not session:
            self._take_over(held[0], session.peer, session.identity.certificate_fingerprint)
        at = time.time()
        self._by_key[key] = (session, at)
        if self._announce is not None:
            identity = session.identity
            claim = Claim(
                key[0], key[1], at, self.worker_id, session.peer, identity.certificate_fingerprint
            )
            self._announce(claim.encode())

    def forget(self, session: Session) -> None:
        """``session`` ended."""
        key = (session.identity.kind.value, session.identity.name)
        held = self._by_key.get(key)
        if held is not None and held[0] is session:
            del self._by_key[key]

    def claimed(self, data: bytes) -> None:
        """Another worker announced a claim: end our session if it is the older one."""
        try:
            claim = Claim.decode(data)
        except ValueError as exc:
            log_event(logging.WARNING, "session_claim_malformed", str(exc), peer="bus")
            return
        held = self._by_key.get((claim.kind, claim.name))
        if held is None:
            return
        session, at = held
        if (at, self.worker_id) < (claim.at, claim.worker):
            del self._by_key[(claim.kind, claim.name)]
            self._take_over(session, f"{claim.peer} (worker {claim.worker})", claim.fingerprint)

    def _take_over(self, previous: Session, by_peer: str, fingerprint: str) -> None:
        log_event(
            logging.INFO,
            "session_taken_over",
            f"a new connection from {by_peer} took over this session",
            peer=previous.peer,
            identity=previous.identity.name,
        )
        previous.disconnect(DisconnectReasonCode.SESSION_TAKEN_OVER, "session taken over")
        self._on_taken_over(previous, by_peer, fingerprint)
