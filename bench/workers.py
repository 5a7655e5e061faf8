"""Gateway workers (issue 15): the connect rate with every core, its CPU cost, idle cost.

In one run, with the same load generator (``bench/loadgen.c``) and certificates:

- Mosquitto (single-threaded), Tether with one worker, Tether with one worker per core, and
  the minimal C TLS server (``bench/tlsmin.c``: the mutual TLS handshake on the same OpenSSL
  and the same certificates, a fixed CONNACK, nothing else; the practical limit of the TLS
  stack, which the issue asks the CPU per connect to be reported against);
- connects/s of each, and **server CPU per connect**: the CPU seconds of the server's whole
  process tree (supervisor, workers, nats-server, API process) over the run, divided by the
  connections made; as ratios to Mosquitto (the goal) and to the minimal server;
- scaling efficiency rate(N) / (N x rate(1)), and the same with the load generator's own CPU
  taken out of the machine (it runs on the same cores: rate(N) / (N x rate(1)) where N is the
  share of the cores the load generator left to the server);
- the CPU of an idle ``tether cloud serve`` (all workers, no client) over 10 s.

The other rows of the issue that need more than one worker or host (latency publish ->
subscriber across workers, memory per idle session with workers, revocation p99 across hosts)
are ``bench/cluster.py``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.common import Result, main, tree_cpu_seconds
from bench.peers import (
    Server,
    build_loadgen,
    build_tlsmin,
    mosquitto_server,
    run_loadgen,
    tether_server,
    tlsmin_server,
)
from bench.world import World, build_world

DURATION = 5.0
THREADS = 16
IDENTITIES = 200
IDLE_SECONDS = 10.0


def _measure(server: Server, loadgen: Path, world: World) -> dict:
    run_loadgen(loadgen, server.port, world.identities, threads=THREADS, duration=1)
    before = tree_cpu_seconds(server.pid)
    outcome = run_loadgen(
        loadgen, server.port, world.identities, threads=THREADS, duration=DURATION
    )
    used = tree_cpu_seconds(server.pid) - before
    failed = sum(outcome["errors"].values())
    if failed:
        raise RuntimeError(f"{failed} failed connections: {outcome['first_error']}")
    outcome["cpu_per_connect_ms"] = used / outcome["connections"] * 1e3
    outcome["server_cores"] = used / outcome["seconds"]
    return outcome


def run(work: Path, repeats: int) -> Result:
    result = Result("workers")
    cores = os.cpu_count() or 1
    world = build_world(work / "world", identities=IDENTITIES)
    loadgen = build_loadgen(work)
    tlsmin = build_tlsmin(work)
    rate = {
        "tlsmin": result.figure("tlsmin_rate", "minimal C TLS server, connects/s", "/s"),
        "mosquitto": result.figure("mosquitto_rate", "Mosquitto, connects/s", "/s"),
        "one": result.figure("tether1_rate", "Tether, 1 worker, connects/s", "/s"),
        "all": result.figure("tetherN_rate", f"Tether, {cores} workers, connects/s", "/s"),
    }
    cpu = {
        "tlsmin": result.figure("tlsmin_cpu", "minimal C TLS server CPU per connect", "ms"),
        "mosquitto": result.figure("mosquitto_cpu", "Mosquitto CPU per connect", "ms"),
        "one": result.figure("tether1_cpu", "Tether 1 worker CPU per connect", "ms"),
        "all": result.figure("tetherN_cpu", f"Tether {cores} workers CPU per connect", "ms"),
    }
    ratio = result.figure("rate_vs_mosquitto", "Tether all workers / Mosquitto", "x")
    cpu_ratio = result.figure("cpu_vs_mosquitto", "Tether CPU per connect / Mosquitto", "x")
    vs_tlsmin = result.figure(
        "cpu_vs_tlsmin", "Tether all workers CPU per connect / minimal TLS server", "x"
    )
    mosquitto_vs_tlsmin = result.figure(
        "mosquitto_cpu_vs_tlsmin", "Mosquitto CPU per connect / minimal TLS server", "x"
    )
    scaling = result.figure("scaling", f"rate({cores}) / ({cores} x rate(1))", "x")
    scaling_net = result.figure("scaling_net", "same, cores left by the load generator", "x")
    idle = result.figure("idle_cpu", "idle tether cloud serve, all workers", "% of a core")
    for _ in range(repeats):
        outcomes: dict[str, dict] = {}
        with tlsmin_server(world, tlsmin) as server:
            outcomes["tlsmin"] = _measure(server, loadgen, world)
        with mosquitto_server(world) as server:
            outcomes["mosquitto"] = _measure(server, loadgen, world)
        with tether_server(world, workers=1) as server:
            outcomes["one"] = _measure(server, loadgen, world)
        with tether_server(world, workers=cores) as server:
            outcomes["all"] = _measure(server, loadgen, world)
            time.sleep(3)  # let the load's last sessions close
            before = tree_cpu_seconds(server.pid)
            time.sleep(IDLE_SECONDS)
            idle.runs.append((tree_cpu_seconds(server.pid) - before) / IDLE_SECONDS * 100)
        for key, outcome in outcomes.items():
            rate[key].runs.append(outcome["rate"])
            cpu[key].runs.append(outcome["cpu_per_connect_ms"])
        ratio.runs.append(outcomes["all"]["rate"] / outcomes["mosquitto"]["rate"])
        cpu_ratio.runs.append(
            outcomes["all"]["cpu_per_connect_ms"] / outcomes["mosquitto"]["cpu_per_connect_ms"]
        )
        vs_tlsmin.runs.append(
            outcomes["all"]["cpu_per_connect_ms"] / outcomes["tlsmin"]["cpu_per_connect_ms"]
        )
        mosquitto_vs_tlsmin.runs.append(
            outcomes["mosquitto"]["cpu_per_connect_ms"] / outcomes["tlsmin"]["cpu_per_connect_ms"]
        )
        scaling.runs.append(outcomes["all"]["rate"] / (cores * outcomes["one"]["rate"]))
        loadgen_cores = outcomes["all"]["loadgen_cpu_seconds"] / outcomes["all"]["seconds"]
        usable = max(cores - loadgen_cores, 1.0)
        scaling_net.runs.append(outcomes["all"]["rate"] / (usable * outcomes["one"]["rate"]))
    result.target("connects/s vs Mosquitto", ratio.median, "x", ">= 1.5", ratio.median >= 1.5)
    result.target(
        "CPU per connect vs Mosquitto", cpu_ratio.median, "x", "<= 1.0", cpu_ratio.median <= 1.0
    )
    result.target(
        "scaling efficiency", scaling_net.median, "x", ">= 0.85", scaling_net.median >= 0.85
    )
    result.target("idle CPU", idle.median, "% of a core", "< 1", idle.median < 1)
    result.notes += [
        f"Load: {THREADS} threads of bench/loadgen.c, {DURATION:.0f} s per server after a 1 s "
        "warm-up; TCP + full TLS 1.3 mutual handshake + MQTT 5 CONNECT/CONNACK + DISCONNECT.",
        "CPU per connect counts the whole server tree (/proc), Mosquitto's single process.",
        "The minimal C TLS server (bench/tlsmin.c, 64 threads blocking in accept on one "
        "socket) does the same mutual TLS handshake on the same OpenSSL with the same "
        "certificates, reads the CONNECT and writes a fixed CONNACK: its CPU per connect is "
        "what the TLS stack alone costs, the floor under any broker. The issue sets no goal "
        "against it: the ratios say how far above that floor Tether and Mosquitto are.",
        "The load generator runs on the same cores as the servers: on a 2-core machine it "
        "takes a large share, which caps what N workers can show (scaling_net accounts for it).",
        "Latency publish -> subscriber across workers, memory per idle session with workers "
        "and revocation p99 across hosts: python -m bench cluster.",
    ]
    return result


if __name__ == "__main__":
    main(run, default_repeats=1)
