"""The listener: TCP accept, TLS handshake, the authority's verdict, then an MQTT session.

The gateway runs its own accept loop and does each TLS handshake in the connection's task
(:mod:`tether.cloud.gateway.handshake`: why, and the refusal codes). The table of live
sessions lets an administrator drop every session of a revoked identity at once, and one
client id has one session across every worker sharing the bus
(:mod:`tether.cloud.gateway.takeover`). (Over 400 lines because the bounds below all act in
one connection's life, accept -> TLS -> verdict -> session; the TLS handshake, admission and
the session table already live in their own modules.)

No client can hold what another needs (each bound is a setting, counted and logged with its
:class:`~tether.cloud.gateway.limits.LimitCode` when it acts):

- ``handshake_timeout`` (3 s) bounds the unauthenticated part, TCP accept -> TLS handshake
  done; ``connect_timeout`` (5 s) bounds accept -> CONNECT, verdict included.
- A connection is *pending* from accept until its CONNECT is accepted. At most
  ``max_pending_per_address`` are pending per source address: one more is closed at accept
  (``handshake_per_address_cap_reached``), so one host cannot fill the table. At most
  ``max_pending_connections`` are pending in all: one more evicts the *oldest* connection
  still in its TLS handshake (``handshake_cap_reached``), so a flood from many addresses
  slows newcomers down by at most the time it takes to refill the table, never locks them
  out until the deadline (authenticated connections waiting for CONNECT are not evicted; if
  all are, the newcomer is closed).
- At most ``max_connections`` connections are open (``connection_cap_reached``: closed at
  accept), clamped below the file-descriptor limit, whose soft value is raised to the hard
  limit when the gateway starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
from collections.abc import Callable

import uvloop
from cryptography import x509
from mqtt5 import ConnAckReasonCode, DisconnectReasonCode

from tether.cloud.bus.base import Bus
from tether.cloud.gateway.admission import Admission
from tether.cloud.gateway.broker import Broker
from tether.cloud.gateway.errors import GatewayConfigurationError
from tether.cloud.gateway.events import log_event
from tether.cloud.gateway.handshake import tls_handshake
from tether.cloud.gateway.identity import (
    BAD_CREDENTIAL_CODES,
    HandshakeRefused,
    Identity,
    IdentityAuthority,
)
from tether.cloud.gateway.limits import (
    LimitCode,
    LimitCounters,
    LimitsReport,
    connection_cap,
    raise_fd_limit,
)
from tether.cloud.gateway.policy import DefaultPolicy, TopicPolicy
from tether.cloud.gateway.session import Session
from tether.cloud.gateway.settings import LIMIT_SETTINGS, GatewaySettings
from tether.cloud.gateway.stats import GatewayStats
from tether.cloud.gateway.streams import (
    CLOSE_TIMEOUT,
    PacketStream,
    close_writer,
    refuse_connect,
)
from tether.cloud.gateway.takeover import CHANNEL, SessionTable
from tether.cloud.gateway.tls import build_server_context

logger = logging.getLogger("tether.gateway")
ACCEPT_BATCH = 64  # connections taken from the kernel's accept queue per loop iteration


def _peer_name(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def _host(peer: str) -> str:
    """The host part of a "host:port" peer name."""
    return peer.rsplit(":", 1)[0]


def _listen(host: str, port: int, *, backlog: int, reuse_port: bool) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    listener = socket.create_server(
        address[:2], family=family, backlog=backlog, reuse_port=reuse_port
    )
    listener.setblocking(False)
    return listener


class Gateway:
    """The MQTT 5 mutual-TLS gateway: one listener, its sessions, and the routing between them.

    ``start`` binds and returns the port; ``stop`` closes the listener and every session. The
    authority is asked once per connection, after the TLS handshake. All methods must be
    called on the event loop the gateway was started on.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        authority: IdentityAuthority,
        *,
        policy: TopicPolicy | None = None,
        bus: Bus | None = None,
    ) -> None:
        self.settings = settings
        self.authority = authority
        self.policy: TopicPolicy = policy or DefaultPolicy()
        self.stats = GatewayStats()
        self.bus = bus
        self.broker = Broker(self.stats, bus=bus)
        self._ssl_context: ssl.SSLContext | None = None
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._live: set[Session] = set()  # authorized, CONNECT pending or accepted
        self._table = SessionTable(
            bus.worker_id if bus is not None else "local",
            (lambda claim: bus.announce(CHANNEL, claim)) if bus is not None else None,
            self._taken_over,
        )
        if bus is not None:
            bus.listen(CHANNEL, self._table.claimed)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.counters = LimitCounters()
        self._open = 0  # accepted connections not yet closed
        self._admission = Admission(settings, self.counters)
        self._fd_limit = 0
        self._max_connections = settings.max_connections

    @property
    def port(self) -> int:
        """The bound port (after ``start``)."""
        if self._listener is None:
            raise GatewayConfigurationError(
                "The gateway is not started; call start() first.", code="gateway_not_started"
            )
        return int(self._listener.getsockname()[1])

    @property
    def listening(self) -> bool:
        """Whether the listener is bound and the gateway is not stopping (for ``/readyz``)."""
        return self._listener is not None and not self._stopping

    async def start(self) -> int:
        """Build the TLS context from the authority's CAs, bind, and return the bound port.

        Raises ``GatewayConfigurationError`` for unreadable credentials or a port in use.
        """
        self.reload_trust()
        if self.bus is not None:
            await self.bus.start()
        self._fd_limit = raise_fd_limit()
        self._max_connections = connection_cap(self.settings.max_connections, self._fd_limit)
        try:
            self._listener = _listen(
                self.settings.host,
                self.settings.port,
                backlog=self.settings.backlog,
                reuse_port=self.settings.reuse_port,
            )
        except OSError as exc:
            raise GatewayConfigurationError(
                f"Cannot listen on {self.settings.host}:{self.settings.port} ({exc}); choose "
                "another port or stop the process using it.",
                code="gateway_bind_failed",
            ) from exc
        self._accept_task = asyncio.get_running_loop().create_task(
            self._accept_loop(self._listener)
        )
        port = self.port
        logger.info(
            "gateway listening on %s:%d",
            self.settings.host,
            port,
            extra={"tether_code": "gateway_listening"},
        )
        return port

    async def stop(self) -> None:
        """Close the listener, send DISCONNECT 0x8B to every session, wait for all to end."""
        self._stopping = True
        logger.info(
            "gateway stopping: %d live sessions",
            len(self._live),
            extra={"tether_code": "gateway_stopping"},
        )
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
        if self._listener is not None:
            self._listener.close()
        for session in list(self._live):
            session.disconnect(DisconnectReasonCode.SERVER_SHUTTING_DOWN, "server shutting down")
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=CLOSE_TIMEOUT + 1)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=CLOSE_TIMEOUT)
        if self.bus is not None:
            await self.bus.close()  # after the sessions: their Wills still go out

    def reload_trust(self) -> None:
        """Rebuild the TLS context from ``authority.trusted_ca_certificates()``.

        New handshakes use the new trust at once; live sessions are not touched (drop them with
        ``drop_sessions`` if a CA was removed). Reads the server certificate and key files again
        (small local files; a brief blocking read). Raises ``GatewayConfigurationError``.
        """
        self._ssl_context = build_server_context(
            certificate_chain=self.settings.certificate_chain,
            private_key=self.settings.private_key,
            trusted_cas=list(self.authority.trusted_ca_certificates()),
        )

    async def drop_sessions(
        self,
        predicate: Callable[[Identity], bool],
        *,
        reason: str,
        code: DisconnectReasonCode = DisconnectReasonCode.ADMINISTRATIVE_ACTION,
    ) -> int:
        """Disconnect (``code``: 0x98 Administrative action unless told) every live session
        whose identity matches.

        Includes connections authorized but still waiting for CONNECT. Returns how many were
        dropped, after they have closed (bounded wait).
        """
        targets = [session for session in self._live if predicate(session.identity)]
        for session in targets:
            log_event(
                logging.WARNING,
                "session_dropped",
                f"dropped by administrative action: {reason}",
                peer=session.peer,
                identity=session.identity.name,
            )
            session.disconnect(code, reason)
        await asyncio.gather(*(session.wait_closed(CLOSE_TIMEOUT + 1) for session in targets))
        return len(targets)

    def live_sessions(self) -> list[tuple[Identity, str]]:
        """``(identity, peer)`` of every connected session (for the hygiene audit)."""
        return [(session.identity, session.peer) for session in self._live if session.connected]

    def connected_sessions(self) -> list[Session]:
        """The sessions whose CONNECT was accepted and that are still open (policy re-checks)."""
        return [session for session in self._live if session.connected]

    def sessions(self) -> list[Identity]:
        """The identities of sessions whose CONNECT was accepted and that are still open."""
        return [session.identity for session in self._live if session.connected]

    def limits_report(self) -> LimitsReport:
        """The limit settings, how often each limit acted, and the levels they bound now."""
        return LimitsReport(
            settings={name: getattr(self.settings, name) for name in LIMIT_SETTINGS},
            counters=self.counters.snapshot(),
            open_connections=self._open,
            pending_connections=len(self._admission.pending),
            sessions=sum(1 for session in self._live if session.connected),
            subscriptions=self.broker.subscription_count(),
            max_connections=self._max_connections,
            fd_limit=self._fd_limit,
        )

    # -- per connection ----------------------------------------------------------------------

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                accepted = [await loop.sock_accept(listener)]
            except OSError as exc:
                # Out of file descriptors and the like: say so, back off, keep serving.
                logger.error(
                    "[gateway_accept_failed] accept failed: %s",
                    exc,
                    extra={"tether_code": "gateway_accept_failed"},
                )
                await asyncio.sleep(0.1)
                continue
            # Under a connection flood, take what the kernel queued in one go (bounded), so
            # a legitimate client behind a thousand refused ones is reached sooner.
            for _ in range(ACCEPT_BATCH - 1):
                try:
                    accepted.append(listener.accept())
                except OSError:  # nothing more queued (or a transient error): next round
                    break
            for connection, address in accepted:
                self._take(loop, connection, address)

    def _take(
        self, loop: asyncio.AbstractEventLoop, connection: socket.socket, address: object
    ) -> None:
        """Admit an accepted connection (or close it) and start its handler task."""
        peer = _peer_name(address)
        host = str(address[0]) if isinstance(address, tuple) else peer
        if not self._admission.admit(host, peer, self._open, self._max_connections):
            connection.close()
            return
        try:
            connection.setblocking(False)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # reset before we got to it; never let one end the accept loop
            connection.close()
            return
        self._open += 1
        task = loop.create_task(self._handle_connection(connection, peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._admission.enter(task, host)

    async def _handle_connection(self, connection: socket.socket, peer: str) -> None:
        now = asyncio.get_running_loop().time()
        deadline = now + self.settings.connect_timeout
        tls_deadline = min(now + self.settings.handshake_timeout, deadline)
        session: Session | None = None
        writer: asyncio.StreamWriter | None = None
        task = asyncio.current_task()
        attempt = self.stats.attempt()  # this task's handshake outcome (gateway.stats)
        try:
            if self._stopping or self._ssl_context is None:
                return
            opened = await tls_handshake(
                self._ssl_context, connection, peer, tls_deadline, self._on_handshake_timeout
            )
            if opened is None:
                return
            reader, writer, leaf = opened
            self._admission.tls_done(task)
            stream = PacketStream(reader, self.settings.max_packet_size)
            identity = await self._authorize(leaf, stream, writer, peer, deadline)
            # This frame lives as long as the session: the parsed leaf (its DER, names and
            # extensions, ~5 KB) is not needed past the verdict (bench/memory.py's profile).
            del opened, leaf
            if identity is None:
                return
            session = Session(
                identity=identity,
                peer=peer,
                stream=stream,
                writer=writer,
                settings=self.settings,
                broker=self.broker,
                policy=self.policy,
                counters=self.counters,
            )
            self._live.add(session)
            await session.run(connect_deadline=deadline, on_connected=self._register)
        except Exception:
            logger.exception(
                "[gateway_internal_error] %s: connection handler failed",
                peer,
                extra={"tether_code": "gateway_internal_error", "peer": peer, "identity": None},
            )
        finally:
            attempt.finish()
            self._admission.leave(task)
            self._open -= 1
            if writer is None:
                # TLS never completed (refused, timed out, evicted): the socket is still ours.
                with contextlib.suppress(OSError):
                    connection.close()
            if session is not None:
                self._live.discard(session)
                self._table.forget(session)
            if writer is not None:
                await close_writer(writer)

    def _on_handshake_timeout(self, peer: str) -> None:
        self.counters.hit(
            LimitCode.HANDSHAKE_DEADLINE,
            f"no TLS handshake within {self.settings.handshake_timeout:g} s; closed",
            peer=peer,
        )

    async def _authorize(
        self,
        leaf: x509.Certificate,
        stream: PacketStream,
        writer: asyncio.StreamWriter,
        peer: str,
        deadline: float,
    ) -> Identity | None:
        try:
            async with asyncio.timeout_at(deadline):
                identity = await self.authority.authorize(leaf)
        except HandshakeRefused as exc:
            log_event(logging.WARNING, exc.code, f"authority refused: {exc.message}", peer=peer)
            reason = (
                ConnAckReasonCode.BAD_USER_NAME_OR_PASSWORD
                if exc.code in BAD_CREDENTIAL_CODES
                else ConnAckReasonCode.NOT_AUTHORIZED
            )
            await refuse_connect(
                stream, writer, reason=reason, reason_str=exc.code, deadline=deadline
            )
            return None
        except TimeoutError:
            self.counters.hit(LimitCode.AUTHORITY_DEADLINE, "no verdict in time", peer=peer)
            return None
        except Exception as exc:
            logger.exception(
                "[authority_error] %s: the identity authority failed",
                peer,
                extra={"tether_code": "authority_error", "peer": peer, "identity": None},
            )
            await refuse_connect(
                stream,
                writer,
                reason=ConnAckReasonCode.SERVER_UNAVAILABLE,
                reason_str=f"authority unavailable ({type(exc).__name__})",
                deadline=deadline,
            )
            return None
        log_event(
            logging.INFO,
            "handshake_authorized",
            f"authority accepted {identity.kind.value} {identity.name!r}",
            peer=peer,
            identity=identity.name,
        )
        return identity

    def _register(self, session: Session) -> None:
        self._admission.leave(asyncio.current_task())  # CONNECT accepted: no longer pending
        self._table.register(session)

    def _taken_over(self, previous: Session, by_peer: str, fingerprint: str) -> None:
        if previous.identity.certificate_fingerprint == fingerprint:
            self.stats.taken_over(
                fingerprint, previous.identity.name, _host(previous.peer), _host(by_peer)
            )


def run(
    settings: GatewaySettings,
    authority: IdentityAuthority,
    *,
    policy: TopicPolicy | None = None,
) -> None:
    """Serve on a uvloop event loop until SIGINT or SIGTERM, then stop cleanly (blocking)."""

    async def serve() -> None:
        gateway = Gateway(settings, authority, policy=policy)
        await gateway.start()
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopped.set)
        try:
            await stopped.wait()
        finally:
            await gateway.stop()

    uvloop.run(serve())
