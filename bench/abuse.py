"""Revocation latency under abuse: p99 while each abuse of issue 14 runs, against quiet.

The issue: "A benchmark (bench/) measures revocation latency p99 under each abuse against the
quiet figure in the same run; goal: no worse than 2x the quiet p99." One ``tether cloud
serve`` (SQLite registry, default limits) runs the whole benchmark. Per repeat, phase after
phase, ``TRIALS`` revocations are timed exactly as ``bench/revocation.py`` times them (a live
MQTT 5 session, ``Registry.revoke_certificate`` from this process, t0 before the call, the drop
when the client reads DISCONNECT or EOF): first quiet, then while each abuse runs in its own
process (``tests/attack/abuse.py``, the same abusers the attack suite uses):

- ``subscribe_flood``: one device sends SUBSCRIBE after SUBSCRIBE, 2,000 filters each, under
  its own subtree;
- ``idle_connections``: ~1,100 TCP connections that never send a ClientHello (from 127.0.0.2
  and up), reopened at a bounded rate when the gateway closes them;
- ``slow_consumer``: a device that never reads while a service publishes QoS 1 commands to it;
- ``token_flood``: 64 keep-alive HTTPS connections sending random well-formed admin tokens;
- ``huge_body``: one 256 MiB ``POST /api/v1/devices`` without Authorization, again and again.

The target per abuse is ``p99 under abuse <= 2 x quiet p99`` (same repeat, same server), with
no failed trial. A failed trial (session not dropped in 5 s, reconnect not refused for the
right reason) is counted, named in the notes and fails the abuse's target.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.attack.abuse import Identity, Target, running_abuse

from bench.common import TETHER, Result, main, percentile, process, wait_for_port
from bench.revocation import Device, Trial, _client_context, _devices, _trial, _warm_up
from bench.world import World, add_service, build_world, free_port
from tether.cloud.registry import Registry

TRIALS = 40  # revocations per phase per repeat
ABUSES = ("subscribe_flood", "idle_connections", "slow_consumer", "token_flood", "huge_body")
PHASES = ("quiet", *ABUSES)
GOAL_RATIO = 2.0
SERVICE = "bench-commander"
ACTOR = "bench"


def run(work: Path, repeats: int) -> Result:
    """``repeats`` rounds of every phase against one ``tether cloud serve``."""
    repeats = max(1, repeats)
    load = os.getloadavg()[0]
    world = build_world(work / "world", identities=2 + TRIALS * len(PHASES) * repeats)
    devices = _devices(world)
    attacker, warm_up, pool = devices[0], devices[1], devices[2:]
    service = _service(world, work / "service")
    result = Result("abuse")
    p99 = {
        phase: result.figure(f"{phase}_p99", f"{phase}: revoke → drop, p99", "ms")
        for phase in PHASES
    }
    p50 = {
        phase: result.figure(f"{phase}_p50", f"{phase}: revoke → drop, p50", "ms")
        for phase in PHASES
    }
    after = {
        phase: result.figure(
            f"{phase}_after_commit_p99", f"{phase}: revoke committed → drop, p99", "ms"
        )
        for phase in PHASES
    }
    failures: dict[str, Counter[str]] = {phase: Counter() for phase in PHASES}
    stats: dict[str, list[str]] = {phase: [] for phase in ABUSES}
    api_port = free_port()
    with _server(world, api_port, work) as port, Registry.open(world.settings.database_url) as reg:
        _warm_up(port, _client_context(world, warm_up), warm_up)
        target = Target(
            port=port,
            pinned_ca=world.settings.pinned_ca,
            attacker=_identity(attacker),
            service=service,
            api_port=api_port,
            max_seconds=300.0,
        )
        batches = iter(pool[i : i + TRIALS] for i in range(0, len(pool), TRIALS))
        for _ in range(repeats):
            for phase in PHASES:
                batch = next(batches)
                if phase == "quiet":
                    trials = [_trial(port, world, device, reg) for device in batch]
                else:
                    with running_abuse(phase, target) as abuse:
                        trials = [_trial(port, world, device, reg) for device in batch]
                    stats[phase].append(
                        f"{dict(abuse.stats)}"
                        + (f" (abuser error: {abuse.error})" if abuse.error else "")
                    )
                drops = [t.drop_ms for t in trials if t.failure is None and t.drop_ms is not None]
                p99[phase].runs.append(percentile(drops, 0.99))
                p50[phase].runs.append(percentile(drops, 0.50))
                after[phase].runs.append(percentile(_after_commit(trials), 0.99))
                failures[phase].update(t.failure for t in trials if t.failure is not None)
    quiet = p99["quiet"].median
    for phase in ABUSES:
        ratio = p99[phase].median / quiet if quiet else float("inf")
        met = ratio <= GOAL_RATIO and not failures[phase]
        result.target(f"{phase}: p99 / quiet p99", ratio, "x", f"≤ {GOAL_RATIO:g}", met)
    _describe(result, repeats, load, quiet, failures, stats)
    return result


def _after_commit(trials: list[Trial]) -> list[float]:
    """Drop latency minus the revoke call: the gateway's share (feed poll + drop)."""
    return [
        t.drop_ms - t.revoke_call_ms
        for t in trials
        if t.failure is None and t.drop_ms is not None and t.revoke_call_ms is not None
    ]


def _identity(device: Device) -> Identity:
    return Identity(device.serial, device.cert_path, device.key_path)


def _service(world: World, directory: Path) -> Identity:
    """The benchmark's service identity (``bench.world.add_service``)."""
    cert_path, key_path = add_service(world, directory, SERVICE)
    return Identity(SERVICE, cert_path, key_path)


@contextmanager
def _server(world: World, api_port: int, work: Path) -> Iterator[int]:
    """``tether cloud serve`` with a known API port (the abusers of the API need it)."""
    port = world.settings.gateway.port
    command = [str(TETHER), "cloud", "serve", str(world.settings.data_dir),
               "--api-port", str(api_port), "--publish-port", "0",
               "--log-level", "WARNING", "--workers", "1"]  # fmt: skip
    with process(command, log=work / "tether-serve.log") as child:
        wait_for_port(port, child=child)
        wait_for_port(api_port, child=child)
        yield port


def _describe(
    result: Result,
    repeats: int,
    load: float,
    quiet: float,
    failures: dict[str, Counter[str]],
    stats: dict[str, list[str]],
) -> None:
    result.notes.append(
        f"{repeats} repeats × {len(PHASES)} phases × {TRIALS} revocations, one `tether cloud "
        "serve` (SQLite registry, default limits) for all; each trial as in bench/revocation.py "
        f"(t0 → DISCONNECT 0x98 or EOF); quiet p99 (median over repeats) {quiet:.1f} ms; the "
        "'revoke committed → drop' figures leave out the revoke call (the registry's durable "
        "commit in this process) and show the gateway's share; "
        f"1-min load average at start {load:.2f} on {os.cpu_count()} cores."
    )
    result.notes.append(
        "each abuse runs in its own process (tests/attack/abuse.py), started and in full swing "
        "before the first trial, stopped after the last; what it did, per repeat:"
    )
    for phase, lines in stats.items():
        result.notes.extend(f"  {phase}: {line}" for line in lines)
    failed = {phase: counts for phase, counts in failures.items() if counts}
    if failed:
        for phase, counts in failed.items():
            listed = "; ".join(f"{n} × {why}" for why, n in counts.most_common())
            result.notes.append(f"FAILED trials in {phase} (left out of the percentiles): {listed}")
    else:
        result.notes.append("failures: none (every session dropped, every reconnect refused).")


if __name__ == "__main__":
    main(run)
