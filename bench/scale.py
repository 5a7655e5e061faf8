"""Scale: connect rate and p99 handshake latency with 1,000,000 registered devices against 1,000.

Run on SQLite and on PostgreSQL (a throwaway Debian ``postgresql`` server started here, fsync
on). Per backend two worlds are built: 1,000 devices, and the same 1,000 plus 999,000 filler
devices with certificates (see bench/world.py). Both gateways run at once on their own
ports; each repeat measures both, the order flipping every repeat. The same 1,000 devices
connect in both cases, so the only difference is the size of the tables and indexes behind
the one query a handshake makes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from tests.postgres import throwaway_postgres

from bench.common import Result, main
from bench.peers import build_loadgen, run_loadgen, tether_server
from bench.world import build_world

DURATION = 5.0
THREADS = 16
CONNECTING = 1_000
SIZES = {"1k": 1_000, "1M": 1_000_000}


@contextmanager
def databases(backend: str, work: Path) -> Iterator[dict[str, str | None]]:
    """A database URL per size (None: the data directory's own SQLite file)."""
    if backend == "sqlite":
        yield dict.fromkeys(SIZES)
        return
    with throwaway_postgres(fsync=True, settings="-c shared_buffers=256MB") as url:
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            for size in SIZES:
                connection.execute(text(f'CREATE DATABASE "bench_{size}"'))
        admin.dispose()
        base, _, query = url.rpartition("?")
        root = base.rsplit("/", 1)[0]
        yield {size: f"{root}/bench_{size}?{query}" for size in SIZES}


def run(work: Path, repeats: int) -> Result:
    result = Result("scale")
    loadgen = build_loadgen(work)
    for backend in ("sqlite", "postgresql"):
        with databases(backend, work) as urls, ExitStack() as servers:
            running = {}
            for size, registered in SIZES.items():
                world = build_world(
                    work / f"{backend}-{size}",
                    identities=CONNECTING,
                    registered=registered,
                    database_url=urls[size],
                )
                running[size] = (world, servers.enter_context(tether_server(world)))
            rate = {s: result.figure(f"{backend}_rate_{s}", f"{backend}, {s} devices", "/s")
                    for s in SIZES}  # fmt: skip
            p99 = {s: result.figure(f"{backend}_p99_{s}", f"{backend}, {s} devices, p99", "ms")
                   for s in SIZES}  # fmt: skip
            rate_ratio = result.figure(f"{backend}_rate_ratio", f"{backend}: rate 1M / 1k", "x")
            p99_ratio = result.figure(f"{backend}_p99_ratio", f"{backend}: p99 1M / 1k", "x")
            for repeat in range(repeats):
                order = list(SIZES) if repeat % 2 == 0 else list(reversed(SIZES))
                for size in order:
                    world, server = running[size]
                    run_loadgen(loadgen, server.port, world.identities, threads=THREADS,
                                duration=1)  # fmt: skip
                    outcome = run_loadgen(
                        loadgen, server.port, world.identities, threads=THREADS,
                        duration=DURATION,
                    )  # fmt: skip
                    if sum(outcome["errors"].values()):
                        raise RuntimeError(f"{backend} {size}: {outcome['first_error']}")
                    rate[size].runs.append(outcome["rate"])
                    p99[size].runs.append(outcome["latency_ms"]["p99"])
                rate_ratio.runs.append(rate["1M"].runs[-1] / rate["1k"].runs[-1])
                p99_ratio.runs.append(p99["1M"].runs[-1] / p99["1k"].runs[-1])
            result.target(
                f"{backend}: rate with 1M / with 1k", rate_ratio.median, "x", ">= 0.90",
                rate_ratio.median >= 0.90,
            )  # fmt: skip
            result.target(
                f"{backend}: p99 with 1M / with 1k", p99_ratio.median, "x", "<= 1.10",
                p99_ratio.median <= 1.10,
            )  # fmt: skip
    result.notes += [
        f"{CONNECTING:,} devices connect in every case ({THREADS} load-generator threads, "
        f"{DURATION:.0f} s per measurement after a 1 s warm-up); the 1M registry adds 999,000 "
        "filler devices, each with a certificate row of real size.",
        "PostgreSQL: Debian's server started by the benchmark on a Unix socket, fsync on, "
        "shared_buffers=256MB; SQLite: WAL, synchronous=FULL (the registry's settings).",
    ]
    return result


if __name__ == "__main__":
    main(run)
