"""Policy: messages/s through the gateway with a 20-statement policy against the built-in default.

One ``tether cloud serve`` on one world with two devices: ``id-0`` is judged by the built-in
default, ``id-1`` by a 20-statement policy attached to it (one connect statement, 17 statements
over other topics, two denies that must be checked on every publish, and the allow that
matches last). Each repeat runs Mosquitto's ``mosquitto_pub`` (MQTT 5, mutual TLS, QoS 1, the
next message after the previous PUBACK) for ``MESSAGES`` messages from each device.

Both publishers run at the same time in each repeat (the machine's load, shared by other
work, then weighs on both alike; the gateway's one event loop serves them in turn), so the
ratio of their rates is the cost of the policy and little else.

A second figure isolates the policy itself: decisions per second of the evaluator on
``DISTINCT`` distinct topics (so its decision cache never hits), 20 statements against the
built-in document. The gateway's cache means a device publishing to the same topics pays the
matching once; this figure is the cost when it does not.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from bench.common import Result, main
from bench.peers import tether_server
from bench.world import World, build_world
from tether.cloud.gateway.identity import Identity, IdentityKind
from tether.cloud.gateway.policy import DefaultPolicy, DocumentPolicy
from tether.cloud.policy.admin import PolicyAdmin
from tether.cloud.policy.document import parse_document
from tether.cloud.policy.evaluate import NamedPolicy, Subject
from tether.cloud.registry import Registry
from tether.cloud.registry.policies import TargetKind

MESSAGES = 4_000
DISTINCT = 20_000
GOAL = 0.90


def twenty_statements() -> dict[str, object]:
    """The benchmark's 20-statement document (the matching allow is the last statement)."""
    statements: list[dict[str, object]] = [
        {"sid": "connect", "effect": "allow", "actions": ["connect"]},
        {"sid": "no-secrets", "effect": "deny", "actions": ["publish", "receive"],
         "resources": ["devices/${serial}/secret/#"]},
        {"sid": "no-admin", "effect": "deny", "actions": ["publish"],
         "resources": ["devices/+/admin/#", "$SYS/#"]},
    ]  # fmt: skip
    for i in range(16):
        statements.append(
            {"sid": f"other-{i}", "effect": "allow", "actions": ["publish", "subscribe"],
             "resources": [f"lines/${{attr.line}}/station-{i}/+", f"groups/${{group}}/s{i}/#"]}
        )  # fmt: skip
    statements.append(
        {"sid": "telemetry", "effect": "allow", "actions": ["publish", "subscribe", "receive"],
         "resources": ["devices/${serial}/telemetry", "devices/${serial}/state/#"]}
    )  # fmt: skip
    assert len(statements) == 20
    return {"version": "1", "statements": statements}


class _Ops(PolicyAdmin):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry


def _attach(world: World, serial: str) -> None:
    with Registry.open(world.settings.database_url) as registry:
        ops = _Ops(registry)
        ops.put_policy("bench-20", twenty_statements(), actor="bench")
        ops.attach_policy("bench-20", TargetKind.DEVICE, serial, actor="bench")
        ops.add_device_group(serial, "bench", actor="bench")
        ops.set_device_attribute(serial, "line", "L1", actor="bench")


def _publisher(world: World, index: int, serial: str, port: int) -> subprocess.Popen[str]:
    """``mosquitto_pub`` sending ``MESSAGES`` QoS 1 messages (one in flight) from ``id-<index>``."""
    command = [
        "mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-i", serial,
        "--cafile", str(world.settings.pinned_ca),
        "--cert", str(world.identities / f"id-{index}.crt"),
        "--key", str(world.identities / f"id-{index}.key"),
        "-t", f"devices/{serial}/telemetry", "-m", "x" * 64, "-q", "1",
        "--repeat", str(MESSAGES),
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rates(world: World, serials: list[str], port: int) -> list[float]:
    """Messages/s of both devices publishing at the same time (same load on the machine)."""
    started = time.monotonic()
    children = [_publisher(world, i, serial, port) for i, serial in enumerate(serials)]
    rates = [0.0] * len(children)
    pending = dict(enumerate(children))
    deadline = started + 600
    while pending and time.monotonic() < deadline:
        for i, child in list(pending.items()):
            if child.poll() is not None:
                rates[i] = MESSAGES / (time.monotonic() - started)
                _, err = child.communicate()
                if child.returncode != 0 or "rror" in err:
                    raise RuntimeError(f"mosquitto_pub for {serials[i]} failed: {err[:300]}")
                del pending[i]
        time.sleep(0.005)
    for child in pending.values():
        child.kill()
    if pending:
        raise RuntimeError("mosquitto_pub did not finish in 600 s")
    return rates


def _decisions_per_second(policy: DocumentPolicy, identity: Identity) -> float:
    topics = [f"devices/{identity.name}/telemetry/{i}" for i in range(DISTINCT)]
    policy.invalidate()
    started = time.perf_counter()
    for topic in topics:
        policy.may_publish(identity, topic)
    return DISTINCT / (time.perf_counter() - started)


def run(work: Path, repeats: int) -> Result:
    result = Result("policy")
    world = build_world(work / "world", identities=2)
    serials = world.serials()
    _attach(world, serials[1])
    default = result.figure("default_rate", "built-in default policy", "msg/s")
    twenty = result.figure("twenty_rate", "20-statement policy", "msg/s")
    ratio = result.figure("ratio", "20 statements / default", "x")
    with tether_server(world, log_level="WARNING") as server:
        _rates(world, serials, server.port)  # warm-up
        for _ in range(repeats):
            base, with_twenty = _rates(world, serials, server.port)
            default.runs.append(base)
            twenty.runs.append(with_twenty)
            ratio.runs.append(with_twenty / base)
    result.target("messages/s, 20 statements / default", ratio.median, "x", f">= {GOAL:.2f}",
                  ratio.median >= GOAL)  # fmt: skip

    # The evaluator alone, uncached (distinct topics).
    device = Identity(IdentityKind.DEVICE, "BENCH-1", "00" * 32, "CN=bench", "11" * 32)
    document = parse_document(twenty_statements())
    subject = Subject("device", "BENCH-1", ("bench",), (("line", "L1"),),
                      (NamedPolicy("bench-20", 1, document),))  # fmt: skip
    builtin_rate = result.figure("builtin_decisions", "evaluator, built-in, uncached", "/s")
    twenty_rate = result.figure("twenty_decisions", "evaluator, 20 statements, uncached", "/s")
    for _ in range(repeats):
        builtin_rate.runs.append(_decisions_per_second(DefaultPolicy(), device))
        twenty_rate.runs.append(_decisions_per_second(DocumentPolicy(lambda _i: subject), device))
    result.notes += [
        f"{MESSAGES:,} QoS 1 messages of 64 bytes per device and repeat from mosquitto_pub "
        "(--repeat, one message in flight), both devices at the same time, no subscribers "
        "(PUBACK 0x10), after one warm-up run; the gateway is `tether cloud serve` with its log "
        "at WARNING. The machine is shared with other work: read the ratio, not the rates.",
        "The policy's decisions are cached per session (bounded), so a device publishing to one "
        "topic pays the 20 statements once; the evaluator figures are without the cache, on "
        f"{DISTINCT:,} distinct topics.",
    ]
    return result


if __name__ == "__main__":
    main(run)
