"""Connect rate: full mutual-TLS handshakes + MQTT 5 CONNECT/CONNACK per second.

Tether's gateway and Mosquitto get the same certificates and the same load generator, and are
measured alternately in one run (the order flips every repeat so neither always runs on a
warmer machine). The crypto limit comes from ``openssl speed`` in the same run. The load
generator is shown not to be the bottleneck by its own CPU cost per connection: from it, the
rate it alone could drive with every core of this machine; and by the servers' CPU use during
the run (a server at ~1 core is saturated, being single-threaded).
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.common import Result, cpu_seconds, main, profile
from bench.peers import (
    Server,
    build_loadgen,
    handshake_crypto_limit,
    mosquitto_server,
    openssl_speed,
    run_loadgen,
    tether_server,
)
from bench.world import World, build_world

DURATION = 5.0
THREADS = 16
IDENTITIES = 200


def measure(server: Server, loadgen: Path, world: World, duration: float = DURATION) -> dict:
    """One load run against ``server``; adds the server's CPU use (cores) to the result."""
    before = cpu_seconds(server.pid)
    outcome = run_loadgen(
        loadgen, server.port, world.identities, threads=THREADS, duration=duration
    )
    outcome["server_cores"] = (cpu_seconds(server.pid) - before) / outcome["seconds"]
    failed = sum(outcome["errors"].values())
    if failed:
        raise RuntimeError(
            f"{failed} failed connections against {server.name}: {outcome['first_error']}"
        )
    return outcome


def run(work: Path, repeats: int) -> Result:
    result = Result("connect")
    cores = os.cpu_count() or 1
    world = build_world(work / "world", identities=IDENTITIES)
    loadgen = build_loadgen(work)
    tether_rate = result.figure("tether_rate", "Tether gateway, handshakes/s", "/s")
    mosquitto_rate = result.figure("mosquitto_rate", "Mosquitto, handshakes/s", "/s")
    ratio = result.figure("tether_vs_mosquitto", "Tether / Mosquitto", "x")
    crypto = result.figure("crypto_limit", f"P-256 crypto limit, {cores} cores", "/s")
    of_limit = result.figure("tether_vs_crypto", "Tether / crypto limit", "x")
    tether_p99 = result.figure("tether_p99", "Tether handshake p99", "ms")
    mosquitto_p99 = result.figure("mosquitto_p99", "Mosquitto handshake p99", "ms")
    tether_cpu = result.figure("tether_cores", "Tether server CPU (cores)", "cores")
    mosquitto_cpu = result.figure("mosquitto_cores", "Mosquitto CPU (cores)", "cores")
    loadgen_cost = result.figure("loadgen_us", "Load generator CPU per connection", "µs")
    loadgen_ceiling = result.figure(
        "loadgen_capacity", f"Load generator alone, {cores} cores", "/s"
    )
    for repeat in range(repeats):
        speed = openssl_speed()
        crypto.runs.append(handshake_crypto_limit(speed, cores))
        outcomes: dict[str, dict] = {}
        order = [tether_server, mosquitto_server]
        if repeat % 2:
            order.reverse()
        for start in order:
            with start(world) as server:
                run_loadgen(loadgen, server.port, world.identities, threads=THREADS, duration=1)
                outcomes[server.name] = measure(server, loadgen, world)
        tether, mosquitto = outcomes["tether"], outcomes["mosquitto"]
        tether_rate.runs.append(tether["rate"])
        mosquitto_rate.runs.append(mosquitto["rate"])
        ratio.runs.append(tether["rate"] / mosquitto["rate"])
        of_limit.runs.append(tether["rate"] / crypto.runs[-1])
        tether_p99.runs.append(tether["latency_ms"]["p99"])
        mosquitto_p99.runs.append(mosquitto["latency_ms"]["p99"])
        tether_cpu.runs.append(tether["server_cores"])
        mosquitto_cpu.runs.append(mosquitto["server_cores"])
        both = [tether, mosquitto]
        cost = sum(o["loadgen_cpu_seconds"] for o in both) / sum(o["connections"] for o in both)
        loadgen_cost.runs.append(cost * 1e6)
        loadgen_ceiling.runs.append(cores / cost)
    result.target("Tether / Mosquitto", ratio.median, "x", ">= 1.5", ratio.median >= 1.5)
    result.target("Tether / crypto limit", of_limit.median, "x", ">= 0.5", of_limit.median >= 0.5)
    result.notes += [
        f"Load: {THREADS} client threads of bench/loadgen.c, {DURATION:.0f} s per server per "
        "repeat after a 1 s warm-up; each connection is TCP + a full TLS 1.3 handshake "
        "(P-256 ECDHE, client certificate, no resumption) + MQTT 5 CONNECT/CONNACK + "
        "DISCONNECT. The load generator does not verify the server (it is not under test).",
        f"Identities: {IDENTITIES} device certificates registered in Tether's SQLite registry; "
        "Mosquitto trusts the same device CA.",
        "Crypto limit: per handshake the server does 2 signatures (CertificateVerify and its "
        "ephemeral key), 2 verifications and 1 ECDH, at `openssl speed` rates, on every core.",
        "Tether runs one gateway process (one event loop, one core); Mosquitto is "
        "single-threaded too.",
    ]
    if ratio.median < 1.5 or of_limit.median < 0.5:
        with tether_server(world) as server:
            from threading import Thread

            load = Thread(target=measure, args=(server, loadgen, world, 6.0))
            load.start()
            result.notes.append("Profile of the Tether gateway under this load (py-spy):")
            result.notes += profile(server.pid, 4, work / "connect-profile.txt")
            load.join()
    return result


if __name__ == "__main__":
    main(run)
