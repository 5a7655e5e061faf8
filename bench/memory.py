"""Memory: resident memory per idle mutual-TLS MQTT 5 session at 10,000 sessions.

Each server is started fresh, warmed up with 200 sessions opened and closed (so code paths,
caches and allocator arenas a first session pays for are not charged to the 10,000), then its
resident set size is read; the load generator opens 10,000 sessions with 10,000 distinct
device certificates and holds them idle; after a 2 s settle the RSS is read again. Per session
= (RSS with sessions - RSS before) / sessions. Tether and Mosquitto alternate first.

The same run measures the floor of Tether's TLS stack: a bare uvloop server on the same stdlib
``ssl`` context (``build_server_context``) whose protocol answers CONNECT with a fixed CONNACK
and keeps nothing else, held idle by the same load generator (``FLOOR_SESSIONS`` connections,
in this process). What is above it is Tether's own (the session's Python objects); what is in
it is uvloop's and CPython's ssl (the OpenSSL connection with its peer certificate, uvloop's
256 KiB read buffer as far as it was touched, the transport objects).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from pathlib import Path

from bench.common import Result, main, rss_bytes
from bench.peers import Server, build_loadgen, mosquitto_server, tether_server
from bench.world import World, build_world

SESSIONS = 10_000
FLOOR_SESSIONS = 2_000
CONNACK = bytes([0x20, 3, 0, 0, 0])  # MQTT 5 CONNACK: success, no properties
WARM_UP = 200
THREADS = 16


def raise_file_limit(needed: int) -> None:
    """Let this process and the servers it starts hold ``needed`` sockets (soft -> hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise RuntimeError(
            f"the open-file limit is {hard}; {needed} sessions need more (ulimit -Hn)"
        )
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def hold(loadgen: Path, server: Server, world: World, count: int) -> tuple[subprocess.Popen, dict]:
    """Open ``count`` sessions and keep them; returns the holder and its report."""
    holder = subprocess.Popen(
        [str(loadgen), "hold", "--port", str(server.port), "--identities", str(world.identities),
         "--count", str(count), "--threads", str(THREADS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None
    report = json.loads(holder.stdout.readline())
    if report["connections"] != count:
        release(holder)
        raise RuntimeError(
            f"{server.name}: only {report['connections']} of {count} sessions opened "
            f"({report['first_error']})"
        )
    return holder, report


def release(holder: subprocess.Popen) -> None:
    """Close the held sessions (the holder exits when its stdin closes)."""
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(120)


def per_session(loadgen: Path, server: Server, world: World) -> tuple[float, float]:
    """Bytes of RSS per idle session, and seconds taken to open them."""
    warm, _ = hold(loadgen, server, world, WARM_UP)
    release(warm)
    time.sleep(1)
    before = rss_bytes(server.pid)
    started = time.monotonic()
    holder, _ = hold(loadgen, server, world, SESSIONS)
    opened = time.monotonic() - started
    try:
        time.sleep(2)
        after = rss_bytes(server.pid)
    finally:
        release(holder)
    return (after - before) / SESSIONS, opened


def run(work: Path, repeats: int) -> Result:
    result = Result("memory")
    raise_file_limit(SESSIONS + 1_000)
    world = build_world(work / "world", identities=SESSIONS)
    loadgen = build_loadgen(work)
    tether_kib = result.figure("tether_kib", "Tether, RSS per idle session", "KiB")
    mosquitto_kib = result.figure("mosquitto_kib", "Mosquitto, RSS per idle session", "KiB")
    ratio = result.figure("tether_vs_mosquitto", "Tether / Mosquitto", "x")
    floor_kib = result.figure("floor_kib", "uvloop + ssl floor, RSS per idle connection", "KiB")
    floor_ratio = result.figure("floor_vs_mosquitto", "Floor / Mosquitto", "x")
    for repeat in range(repeats):
        measured: dict[str, float] = {}
        order = [tether_server, mosquitto_server]
        if repeat % 2:
            order.reverse()
        for start in order:
            with start(world) as server:
                measured[server.name], _ = per_session(loadgen, server, world)
        tether_kib.runs.append(measured["tether"] / 1024)
        mosquitto_kib.runs.append(measured["mosquitto"] / 1024)
        ratio.runs.append(measured["tether"] / measured["mosquitto"])
        floor = tls_floor(world, loadgen)
        floor_kib.runs.append(floor / 1024)
        floor_ratio.runs.append(floor / measured["mosquitto"])
    result.target("Tether / Mosquitto, per session", ratio.median, "x", "<= 1.2",
                  ratio.median <= 1.2)  # fmt: skip
    result.notes += [
        f"{SESSIONS:,} sessions, each its own device certificate, TLS 1.3, MQTT 5 with "
        "keep-alive 600 s, idle; RSS from /proc/<pid>/status of the one server process.",
        f"Floor: {FLOOR_SESSIONS:,} idle connections to a bare uvloop + stdlib ssl server "
        "(same TLS context, fixed CONNACK, nothing kept), in the benchmark's process. "
        "CPython already sets SSL_MODE_RELEASE_BUFFERS on every SSLContext (mode 0x14), so "
        "OpenSSL's record buffers are not held by idle connections.",
    ]
    if ratio.median > 1.2:
        result.notes += python_heap_profile(world, loadgen, tether_kib.median)
    return result


def tls_floor(world: World, loadgen: Path, count: int = FLOOR_SESSIONS) -> float:
    """Bytes of RSS per idle connection of a bare uvloop TLS server (see the docstring)."""
    import asyncio
    import threading

    import uvloop
    from cryptography import x509

    from tether.cloud.gateway.tls import build_server_context

    context = build_server_context(
        certificate_chain=world.settings.server_chain,
        private_key=world.settings.server_key,
        trusted_cas=x509.load_pem_x509_certificates(Path(world.client_ca_file).read_bytes()),
    )

    class Bare(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            if data[:1] == b"\x10":  # CONNECT
                self.transport.write(CONNACK)  # type: ignore[attr-defined]

    loop = uvloop.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        listening = asyncio.run_coroutine_threadsafe(
            loop.create_server(Bare, "127.0.0.1", 0, ssl=context), loop
        ).result(30)
        port = listening.sockets[0].getsockname()[1]
        server = Server("uvloop floor", os.getpid(), port, world.base / "floor.log")
        warm, _ = hold(loadgen, server, world, WARM_UP)
        release(warm)
        time.sleep(1)
        before = rss_bytes(os.getpid())
        holder, _ = hold(loadgen, server, world, count)
        try:
            time.sleep(2)
            after = rss_bytes(os.getpid())
        finally:
            release(holder)
        listening.close()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
    return (after - before) / count


def _short(filename: str) -> str:
    """A source path without this machine's prefixes (site-packages, the checkout, stdlib)."""
    if "site-packages/" in filename:
        return filename.split("site-packages/")[-1]
    if "/src/" in filename:
        return filename.split("/src/")[-1]
    return "stdlib:" + Path(filename).name


def python_heap_profile(
    world: World, loadgen: Path, rss_kib: float, count: int = 1_000
) -> list[str]:
    """Where a Tether session's memory goes: tracemalloc over ``count`` sessions, in-process.

    The gateway runs in this process (``CloudService`` on a uvloop thread, as in the tests) so
    tracemalloc can attribute every Python allocation the sessions make to a source line;
    what RSS shows beyond that is native memory (OpenSSL's connection state and buffers,
    uvloop's handles), which tracemalloc cannot see.
    """
    import asyncio
    import threading
    import tracemalloc

    import uvloop

    from tether.cloud.registry import Registry
    from tether.cloud.service import CloudService

    registry = Registry.open(world.settings.database_url)
    service = CloudService(registry, world.settings.gateway_settings())
    loop = uvloop.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        port = asyncio.run_coroutine_threadsafe(service.start(), loop).result(30)
        server = Server("tether (in-process)", os.getpid(), port, world.base / "inprocess.log")
        warm, _ = hold(loadgen, server, world, WARM_UP)
        release(warm)
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        holder, _ = hold(loadgen, server, world, count)
        time.sleep(1)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        release(holder)
        asyncio.run_coroutine_threadsafe(service.stop(), loop).result(60)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(10)
        registry.close()
    growth = [d for d in after.compare_to(before, "lineno") if d.size_diff > 0]
    lines = [
        f"Memory profile (tracemalloc, {count:,} sessions in the benchmark's own process; "
        f"RSS per session above: {rss_kib:.1f} KiB). Python allocations per session, largest "
        "first. tracemalloc counts what was reserved; RSS counts only the pages touched, so a "
        "large reserved buffer (uvloop's 256 KiB TLS read buffer per connection) shows here in "
        "full but in RSS only as far as it was written. What RSS shows beyond the touched "
        "Python objects is native: OpenSSL's per-connection state and record buffers."
    ]
    for diff in growth[:10]:
        frame = diff.traceback[0]
        where = _short(frame.filename)
        lines.append(f"{diff.size_diff / count:8.0f} B  {where}:{frame.lineno}")
    return lines


if __name__ == "__main__":
    main(run)
