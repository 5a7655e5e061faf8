"""Abusive clients, run in their own process, and the probes that time a legitimate client.

Used by ``tests/attack/test_abuse_gateway.py`` (asserts while an abuse runs) and
``bench/abuse.py`` (revocation p99 under each abuse). Each abuse runs in a child process
(``spawn``), so its work never shares the probing process's GIL and the probes time the
cloud, not the abuser. Every abuse is bounded: it stops when told to, or after
``Target.max_seconds`` on its own, and its loops have counts. Loopback only: the abusers
connect to 127.0.0.1, idle connections come from other loopback addresses (127.0.0.2 and
up), so the per-address cap meets the abuser and not the legitimate client on 127.0.0.1.

The abuses (issue 14): ``subscribe_flood`` (one authenticated device sends SUBSCRIBE after
SUBSCRIBE with thousands of filters under its own subtree), ``idle_connections`` (~1,100 TCP
connections that never send a ClientHello, reopened at a bounded rate when closed),
``slow_consumer`` (a device that never reads while a service publishes QoS 1 commands to it),
``token_flood`` (keep-alive HTTPS connections sending random well-formed admin tokens) and
``huge_body`` (a 256 MiB unauthenticated ``POST /api/v1/devices``, again and again).
"""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import queue
import resource
import secrets
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import mqtt5
from cryptography import x509
from mqtt5 import QoS, TopicFilter

from tests.support.mqtt import RawClient, tls_context
from tether.cloud.registry import Registry

IO_TIMEOUT = 5.0
READY_TIMEOUT = 60.0
FILTERS_PER_SUBSCRIBE = 2000  # ~48 KiB per SUBSCRIBE, under the default 256 KiB packet limit
IDLE_CONNECTIONS = 1100
IDLE_ADDRESSES = 4  # 127.0.0.2 .. 127.0.0.5, 275 connections each
IDLE_REOPEN_PER_SECOND = 500
COMMAND_PAYLOAD = 8 * 1024
TOKEN_THREADS = 64
HUGE_BODY = 256 * 1024 * 1024
BODY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Identity:
    """An identity's files (picklable, for the child process)."""

    name: str
    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class Target:
    """What the abuser attacks: the cloud's ports, the pinned CA, the identities it uses."""

    port: int
    pinned_ca: Path
    attacker: Identity | None = None
    service: Identity | None = None
    api_port: int | None = None
    max_seconds: float = 120.0


def mqtt_client(
    target: Target, identity: Identity, *, receive_buffer: int | None = None
) -> RawClient:
    """A connected MQTT 5 session (CONNACK 0x00) over TLS, Nagle off."""
    client = RawClient(
        target.port,
        tls_context(target.pinned_ca, identity),
        timeout=IO_TIMEOUT,
        receive_buffer=receive_buffer,
    )
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        ack = client.connect(identity.name)
        if not isinstance(ack, mqtt5.ConnAckPacket) or ack.reason_code != 0:
            raise ConnectionError(f"CONNECT refused: {ack!r}")
    except BaseException:
        client.close()
        raise
    return client


# -- the abuses (each runs in the child process) -----------------------------------------------


def subscribe_flood(target: Target, stop: Event, ready: Event, stats: dict[str, int]) -> None:
    """SUBSCRIBE after SUBSCRIBE, ``FILTERS_PER_SUBSCRIBE`` new filters each, own subtree."""
    assert target.attacker is not None
    base = f"devices/{target.attacker.name}/flood"
    client = mqtt_client(target, target.attacker)
    serial = 0
    try:
        while not stop.is_set():
            filters = [
                TopicFilter(f"{base}/{serial + i}", max_qos=QoS.AT_MOST_ONCE)
                for i in range(FILTERS_PER_SUBSCRIBE)
            ]
            serial += FILTERS_PER_SUBSCRIBE
            packet_id = stats["packets"] % 65535 + 1
            client.send(mqtt5.SubscribePacket(packet_id, filters))
            ack = client.recv(IO_TIMEOUT)
            if not isinstance(ack, mqtt5.SubAckPacket):
                stats["disconnected"] += 1
                client.close()
                client = mqtt_client(target, target.attacker)
                continue
            stats["packets"] += 1
            stats["granted"] += sum(1 for c in ack.reason_codes if int(c) < 0x80)
            stats["quota_exceeded"] += sum(1 for c in ack.reason_codes if int(c) == 0x97)
            ready.set()
    finally:
        client.close()


def idle_connections(target: Target, stop: Event, ready: Event, stats: dict[str, int]) -> None:
    """Hold ``IDLE_CONNECTIONS`` TCP connections that never send a byte; reopen closed ones."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    selector = selectors.DefaultSelector()

    def open_one(source: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.bind((source, 0))
        sock.connect_ex(("127.0.0.1", target.port))
        selector.register(sock, selectors.EVENT_READ, source)
        stats["opened"] += 1

    closed: deque[str] = deque()
    try:
        for index in range(IDLE_CONNECTIONS):
            open_one(f"127.0.0.{2 + index % IDLE_ADDRESSES}")
        ready.set()
        while not stop.is_set():
            for key, _ in selector.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                selector.unregister(sock)
                sock.close()
                stats["closed_by_gateway"] += 1
                closed.append(str(key.data))
            for _ in range(min(len(closed), IDLE_REOPEN_PER_SECOND // 10)):
                open_one(closed.popleft())
            time.sleep(0.1)
    finally:
        for key in list(selector.get_map().values()):
            with contextlib.suppress(OSError):
                key.fileobj.close()  # type: ignore[union-attr]
        selector.close()


def slow_consumer(target: Target, stop: Event, ready: Event, stats: dict[str, int]) -> None:
    """A device that never reads its QoS 1 commands while a service publishes them."""
    assert target.attacker is not None and target.service is not None
    topic = f"devices/{target.attacker.name}/commands"

    def subscribed_reader() -> RawClient:
        reader = mqtt_client(target, target.attacker, receive_buffer=4096)  # type: ignore[arg-type]
        reader.send(
            mqtt5.SubscribePacket(1, [TopicFilter(f"{topic}/#", max_qos=QoS.AT_LEAST_ONCE)])
        )
        if not isinstance(reader.recv(IO_TIMEOUT), mqtt5.SubAckPacket):
            raise ConnectionError("no SUBACK")
        return reader

    reader = subscribed_reader()
    service = mqtt_client(target, target.service)
    payload = b"c" * COMMAND_PAYLOAD
    try:
        while not stop.is_set():
            packet_id = stats["published"] % 65535 + 1
            service.send(
                mqtt5.PublishPacket(
                    f"{topic}/x", payload, qos=QoS.AT_LEAST_ONCE, packet_id=packet_id
                )
            )
            ack = service.recv(IO_TIMEOUT)
            if not isinstance(ack, mqtt5.PubAckPacket):
                raise ConnectionError(f"service lost its session: {ack!r}")
            stats["published"] += 1
            ready.set()
            if int(ack.reason_code) == 0x10:  # no matching subscribers: the reader was dropped
                stats["reader_dropped"] += 1
                reader.close()
                reader = subscribed_reader()
    finally:
        reader.close()
        service.close()


def token_flood(target: Target, stop: Event, ready: Event, stats: dict[str, int]) -> None:
    """``TOKEN_THREADS`` keep-alive HTTPS connections sending random well-formed tokens."""
    assert target.api_port is not None
    context = tls_context(target.pinned_ca, None)
    lock = threading.Lock()

    def worker() -> None:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", target.api_port, context=context, timeout=IO_TIMEOUT * 4
        )
        while not stop.is_set():
            token = f"tether_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)[:43]}"
            try:
                connection.request(
                    "GET", "/api/v1/devices", headers={"Authorization": f"Bearer {token}"}
                )
                response = connection.getresponse()
                response.read()
                with lock:
                    stats[f"status_{response.status}"] += 1
                ready.set()
            except (OSError, http.client.HTTPException):
                with lock:
                    stats["errors"] += 1
                connection.close()
                time.sleep(0.05)
        connection.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(TOKEN_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def huge_body(target: Target, stop: Event, ready: Event, stats: dict[str, int]) -> None:
    """``POST /api/v1/devices`` with a 256 MiB body and no Authorization, again and again."""
    assert target.api_port is not None
    context = tls_context(target.pinned_ca, None)
    chunk = b" " * BODY_CHUNK
    while not stop.is_set():
        connection = http.client.HTTPSConnection(
            "127.0.0.1", target.api_port, context=context, timeout=IO_TIMEOUT * 4
        )
        try:
            connection.putrequest("POST", "/api/v1/devices")
            connection.putheader("Content-Type", "application/json")
            connection.putheader("Content-Length", str(HUGE_BODY))
            connection.endheaders()
            ready.set()
            for _ in range(HUGE_BODY // BODY_CHUNK):
                if stop.is_set():
                    break
                connection.send(chunk)
                stats["mib_sent"] += 1
            response = connection.getresponse()
            stats[f"status_{response.status}"] += 1
        except (OSError, http.client.HTTPException):
            stats["cut_by_server"] += 1
        finally:
            connection.close()
        time.sleep(0.05)


ABUSES: dict[str, Callable[[Target, Event, Event, dict[str, int]], None]] = {
    "subscribe_flood": subscribe_flood,
    "idle_connections": idle_connections,
    "slow_consumer": slow_consumer,
    "token_flood": token_flood,
    "huge_body": huge_body,
}


def _child(name: str, target: Target, stop: Event, ready: Event, out: Any) -> None:
    stats: dict[str, int] = _Counts()
    timer = threading.Timer(target.max_seconds, stop.set)  # stops by itself
    timer.daemon = True
    timer.start()
    error = ""
    try:
        ABUSES[name](target, stop, ready, stats)
    except Exception as exc:  # reported to the parent, which decides
        error = f"{type(exc).__name__}: {exc}"
    finally:
        timer.cancel()
        ready.set()
        out.put((dict(stats), error))


class _Counts(dict[str, int]):
    def __missing__(self, key: str) -> int:
        return 0


@dataclass
class AbuseRun:
    """A running abuse: ``stats`` and ``error`` are filled in when it has stopped."""

    name: str
    stats: dict[str, int] = field(default_factory=dict)
    error: str = ""


@contextlib.contextmanager
def running_abuse(name: str, target: Target) -> Iterator[AbuseRun]:
    """Run abuse ``name`` in a child process while the block runs (started and ready)."""
    context = multiprocessing.get_context("spawn")
    stop, ready, out = context.Event(), context.Event(), context.Queue()
    child = context.Process(target=_child, args=(name, target, stop, ready, out), daemon=True)
    child.start()
    run = AbuseRun(name)
    try:
        if not ready.wait(READY_TIMEOUT):
            raise AssertionError(f"abuse {name} did not get going in {READY_TIMEOUT:g} s")
        yield run
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            run.stats, run.error = out.get(timeout=30)
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join(5)


# -- the probes (in the measuring process) ----------------------------------------------------


def timed_connect(target: Target, identity: Identity) -> float:
    """Seconds from TCP connect to CONNACK 0x00 for a legitimate client (then DISCONNECT)."""
    started = time.perf_counter()
    client = mqtt_client(target, identity)
    elapsed = time.perf_counter() - started
    with contextlib.suppress(OSError):
        client.send(mqtt5.DisconnectPacket())
    client.close()
    return elapsed


def timed_revocation(
    target: Target, identity: Identity, fingerprint: str, registry: Registry
) -> tuple[float, float]:
    """Milliseconds from the revoke call to the live session's DISCONNECT (or close), and
    milliseconds the revoke call itself took (the registry's durable commit).

    The certificate is revoked through the registry from this process, as ``tether cloud
    revoke`` does from another process than the gateway. ``inf`` if not dropped in 5 s.
    """
    client = mqtt_client(target, identity)
    seen: list[float] = []

    def wait_drop() -> None:
        packet = client.recv(IO_TIMEOUT)
        if packet is None or isinstance(packet, mqtt5.DisconnectPacket):
            seen.append(time.perf_counter())

    reader = threading.Thread(target=wait_drop, daemon=True)
    reader.start()
    started = time.perf_counter()
    try:
        registry.revoke_certificate(
            fingerprint, reason=x509.ReasonFlags.key_compromise, actor="attack:abuse"
        )
        call_ms = (time.perf_counter() - started) * 1000
        reader.join(IO_TIMEOUT + 1)
    finally:
        client.close()
    return ((seen[0] - started) * 1000 if seen else float("inf")), call_ms
