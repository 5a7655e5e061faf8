"""Memory: resident memory per idle mutual-TLS MQTT 5 session at 10,000 sessions.

Each server is started fresh, warmed up with 200 sessions opened and closed (so code paths,
caches and allocator arenas a first session pays for are not charged to the 10,000), then its
resident set size is read; the load generator opens 10,000 sessions with 10,000 distinct
device certificates and holds them idle; after a 2 s settle the RSS is read again. Per session
= (RSS with sessions - RSS before) / sessions. Tether and Mosquitto alternate first.
"""

from __future__ import annotations

import json
import resource
import subprocess
import time
from pathlib import Path

from bench.common import Result, main, rss_bytes
from bench.peers import Server, build_loadgen, mosquitto_server, tether_server
from bench.world import World, build_world

SESSIONS = 10_000
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
    result.target("Tether / Mosquitto, per session", ratio.median, "x", "<= 1.2",
                  ratio.median <= 1.2)  # fmt: skip
    result.notes += [
        f"{SESSIONS:,} sessions, each its own device certificate, TLS 1.3, MQTT 5 with "
        "keep-alive 600 s, idle; RSS from /proc/<pid>/status of the one server process.",
        "Tether holds per session: the TLS object and its buffers (OpenSSL), the asyncio "
        "transport and stream reader, the Session object and its identity.",
    ]
    return result


if __name__ == "__main__":
    main(run)
