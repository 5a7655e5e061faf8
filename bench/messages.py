"""Messages: messages/s and p99 latency device -> service, QoS 0 and QoS 1, Tether vs Mosquitto.

The issue: "``bench/`` compares messages/s and p99 latency (QoS 0 and QoS 1, device ->
service) against Mosquitto in the same run; goal >= 1.0x." Tether's gateway (``tether cloud
serve``, log at WARNING) and Mosquitto (``bench.peers``, the same server certificate and client
CAs) run side by side in one run; each repeat measures both, the order flipping every repeat.

Per measurement, the same clients for both servers (MQTT 5, mutual TLS):

- the service (a service identity) is Mosquitto's ``mosquitto_sub`` (C), subscribed to
  ``devices/+/telemetry`` at the QoS measured with Receive Maximum ``RECEIVE_MAXIMUM``,
  printing each message's receive time (``%U``, ``CLOCK_REALTIME``) before its payload;
- ``PUBLISHERS`` devices, each a paho-mqtt process (``python -m bench.messages client ...``),
  publish ``MESSAGES`` messages of 64 bytes in all to ``devices/<serial>/telemetry``, each
  stamped with the send time: QoS 0 as fast as paho writes them, QoS 1 with ``WINDOW`` in
  flight per device (the stamp is taken when the message is handed to paho, so paho's own
  queueing counts as latency). A QoS 0 probe first shows the subscription is in place.

messages/s = messages received / (last receive - first send); p99 = 99th percentile latency of
the received messages. With a flood, the latency is mostly queueing in whichever part is the
bottleneck; the notes say which (the servers' CPU, and a py-spy profile of the gateway).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from subprocess import Popen

from bench.common import Result, cpu_seconds, main, percentile, profile
from bench.peers import Server, mosquitto_server, tether_server
from bench.world import World, add_service, build_world

MESSAGES = 20_000  # per measurement, split over the publishers
PUBLISHERS = 3  # device processes (paho in Python: one alone cannot load a broker)
WINDOW = 64  # QoS 1 messages in flight per publisher (paho's max_inflight_messages)
PAYLOAD = 64
# The service's Receive Maximum (mosquitto_sub's default is 20): with 20, the gateway's QoS 1
# queue to the service (1,000 messages) overflows and it is disconnected with 0x97.
RECEIVE_MAXIMUM = 1000
GOAL = 1.0
SERVICE = "bench-consumer"
PROBE = b"probe"
PROFILE_READING = [
    "What is missed: the server CPU per message says it: the gateway spends ~8x (QoS 0) and "
    "~5x (QoS 1) the CPU of Mosquitto per message, on a machine where every process gets a "
    "share of 2 cores, so its rate is CPU-bound at a lower level. py-spy sees Python frames "
    "only: 'self Runner.run' is time inside uvloop (C: the socket I/O and the TLS records), "
    "'_chain_future' the hand-back of results from the gateway's threads, and AuditLog."
    "audit_after the registry feed polling on its thread (it holds the GIL while it builds "
    "rows). None of Tether's per-message Python (session, broker, policy) is in the top. "
    "Next steps: poll the feed less often while it finds nothing (or LISTEN/NOTIFY), "
    "write a batch of PUBLISH packets per socket write, and the gateway workers of issue "
    "15 (one per core).",
]


def _client(argv: list[str]) -> None:
    """A publishing device: ``client PORT QOS CA CERT KEY CLIENT_ID TOPIC COUNT PROBE``.

    Connects, says ``connected``; with ``PROBE`` 1 publishes a QoS 0 probe every 0.1 s until
    the parent writes ``go`` (so the service's subscription is known to be in place); then
    ``COUNT`` messages stamped with ``CLOCK_REALTIME`` in ns (ASCII, what mosquitto_sub's
    ``%U`` prints), QoS 1 ones with at most ``WINDOW`` in flight; says ``sent`` at the end.
    """
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    port, qos, ca, cert, key, client_id, topic, count, probe = argv
    level = int(qos)
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
    )
    client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    client.max_inflight_messages_set(WINDOW)
    client.max_queued_messages_set(0)
    connected, go = threading.Event(), threading.Event()
    in_flight = threading.Semaphore(WINDOW)
    client.on_connect = lambda _c, _u, _f, _reason, _p: connected.set()
    client.on_publish = lambda _c, _u, _mid, _reason, _p: in_flight.release()
    client.connect("127.0.0.1", int(port), keepalive=60)
    client.loop_start()
    if not connected.wait(30):
        raise SystemExit("no CONNACK")
    print("connected", flush=True)
    if probe == "1":
        threading.Thread(target=lambda: (sys.stdin.readline(), go.set()), daemon=True).start()
        while not go.wait(0.1):
            client.publish(topic, PROBE, qos=0)
    else:
        sys.stdin.readline()
    for _ in range(int(count)):
        if level:
            in_flight.acquire()
        stamp = str(time.time_ns()).encode()
        client.publish(topic, stamp + b" " + b"x" * (PAYLOAD - len(stamp) - 1), qos=level)
    if level:
        for _ in range(WINDOW):
            in_flight.acquire(timeout=30)
    print("sent", flush=True)
    client.disconnect()
    client.loop_stop()


def _publisher(server: Server, world: World, index: int, qos: int, count: int) -> Popen:
    serial = world.serials()[index]
    return subprocess.Popen(
        [sys.executable, "-m", "bench.messages", "client", str(server.port), str(qos),
         str(world.settings.pinned_ca), str(world.identities / f"id-{index}.crt"),
         str(world.identities / f"id-{index}.key"), serial, f"devices/{serial}/telemetry",
         str(count), "1" if index == 0 else "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip


def _subscriber(server: Server, world: World, service: tuple[Path, Path], qos: int) -> Popen:
    """``mosquitto_sub`` as the service: each line ``<receive time %U> <payload>``."""
    return subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(server.port), "-V", "mqttv5",
         "-i", SERVICE, "--cafile", str(world.settings.pinned_ca),
         "--cert", str(service[0]), "--key", str(service[1]),
         "-t", "devices/+/telemetry", "-q", str(qos), "-F", "%U %p",
         "-D", "connect", "receive-maximum", str(RECEIVE_MAXIMUM)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def measure(server: Server, world: World, service: tuple[Path, Path], qos: int) -> dict:
    """One flood of ``MESSAGES`` at ``qos`` through ``server``: rate, p99, server CPU."""
    sub = _subscriber(server, world, service, qos)
    share = MESSAGES // PUBLISHERS
    pubs = [_publisher(server, world, i, qos, share) for i in range(PUBLISHERS)]
    lines: list[str] = []
    probed = threading.Event()

    def read() -> None:
        assert sub.stdout is not None
        for line in sub.stdout:
            if " probe" in line:
                probed.set()
            else:
                lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        for pub in pubs:
            assert pub.stdout is not None
            if pub.stdout.readline().strip() != "connected":
                raise RuntimeError(f"{server.name}: a publisher failed: {pub.communicate()[1]}")
        if not probed.wait(60):
            raise RuntimeError(f"{server.name}: the service never received the probe")
        cpu_before, wall_before = cpu_seconds(server.pid), time.monotonic()
        first_send = time.time_ns()
        for pub in pubs:
            assert pub.stdin is not None
            pub.stdin.write("go\n")
            pub.stdin.flush()
        for pub in pubs:
            out, err = pub.communicate(timeout=600)
            if pub.returncode != 0 or "sent" not in out:
                raise RuntimeError(f"{server.name}: a publisher failed: {err[-500:]}")
        deadline = time.monotonic() + 10
        while len(lines) < share * PUBLISHERS and time.monotonic() < deadline:
            time.sleep(0.05)
        cores = (cpu_seconds(server.pid) - cpu_before) / (time.monotonic() - wall_before)
    finally:
        for child in (*pubs, sub):
            if child.poll() is None:
                child.kill()
        sub.wait(10)
    latencies, last = [], 0
    for line in list(lines):
        received, _, payload = line.partition(" ")
        seconds, _, nanos = received.partition(".")
        at = int(seconds) * 1_000_000_000 + int(nanos.ljust(9, "0")[:9])
        latencies.append(at - int(payload.split(" ", 1)[0]))
        last = max(last, at)
    if not latencies:
        raise RuntimeError(f"{server.name}: no message arrived at QoS {qos}")
    return {
        "rate": len(latencies) / ((last - first_send) / 1e9),
        "p99_ms": percentile(latencies, 0.99) / 1e6,
        "delivered": len(latencies) / (share * PUBLISHERS),
        "cores": cores,
    }


def run(work: Path, repeats: int) -> Result:
    result = Result("messages")
    world = build_world(work / "world", identities=PUBLISHERS)
    service = add_service(world, work / "service", SERVICE)
    figures = {}
    for qos in (0, 1):
        for name in ("tether", "mosquitto"):
            figures[(name, qos, "rate")] = result.figure(
                f"{name}_qos{qos}_rate", f"{name}, QoS {qos}, msg/s", "msg/s"
            )
            figures[(name, qos, "p99")] = result.figure(
                f"{name}_qos{qos}_p99", f"{name}, QoS {qos}, p99 latency", "ms"
            )
            figures[(name, qos, "cores")] = result.figure(
                f"{name}_qos{qos}_cores", f"{name}, QoS {qos}, server CPU", "cores"
            )
            figures[(name, qos, "cpu_us")] = result.figure(
                f"{name}_qos{qos}_cpu_us", f"{name}, QoS {qos}, server CPU per message", "µs"
            )
        figures[("ratio", qos, "rate")] = result.figure(
            f"qos{qos}_rate_ratio", f"QoS {qos} msg/s, Tether / Mosquitto", "x"
        )
        figures[("ratio", qos, "p99")] = result.figure(
            f"qos{qos}_p99_ratio", f"QoS {qos} p99, Mosquitto / Tether", "x"
        )
    delivered: dict[str, float] = {}
    profiled: list[str] = []
    for repeat in range(repeats):
        order = [tether_server, mosquitto_server]
        if repeat % 2:
            order.reverse()
        outcomes: dict[tuple[str, int], dict] = {}
        for start in order:
            kwargs = {"log_level": "WARNING"} if start is tether_server else {}
            with start(world, **kwargs) as server:
                measure(server, world, service, 1)  # warm-up (TLS, caches, imports)
                for qos in (0, 1):
                    if server.name == "tether" and qos == 1 and not profiled:
                        spy = threading.Thread(
                            target=lambda s=server: profiled.extend(
                                profile(s.pid, 4, work / "tether.spy")
                            )
                        )
                        spy.start()
                        outcomes[(server.name, qos)] = measure(server, world, service, qos)
                        spy.join()
                    else:
                        outcomes[(server.name, qos)] = measure(server, world, service, qos)
        for qos in (0, 1):
            tether, mosquitto = outcomes[("tether", qos)], outcomes[("mosquitto", qos)]
            for name, outcome in (("tether", tether), ("mosquitto", mosquitto)):
                figures[(name, qos, "rate")].runs.append(outcome["rate"])
                figures[(name, qos, "p99")].runs.append(outcome["p99_ms"])
                figures[(name, qos, "cores")].runs.append(outcome["cores"])
                figures[(name, qos, "cpu_us")].runs.append(1e6 * outcome["cores"] / outcome["rate"])
                key = f"{name} QoS {qos}"
                delivered[key] = min(delivered.get(key, 1.0), outcome["delivered"])
            figures[("ratio", qos, "rate")].runs.append(tether["rate"] / mosquitto["rate"])
            figures[("ratio", qos, "p99")].runs.append(mosquitto["p99_ms"] / tether["p99_ms"])
    for qos in (0, 1):
        for what, label in (("rate", "msg/s, Tether / Mosquitto"),
                            ("p99", "p99 latency, Mosquitto / Tether")):  # fmt: skip
            ratio = figures[("ratio", qos, what)].median
            result.target(f"QoS {qos} {label}", ratio, "x", f">= {GOAL:.1f}", ratio >= GOAL)
    result.notes += [
        f"{MESSAGES:,} messages of {PAYLOAD} bytes per measurement from {PUBLISHERS} devices "
        "(paho-mqtt 2, one process each) to one service (mosquitto_sub, Receive Maximum "
        f"{RECEIVE_MAXIMUM}) subscribed to devices/+/telemetry; MQTT 5, mutual TLS, the same "
        f"clients for both servers; QoS 0 flooded, QoS 1 with {WINDOW} in flight per device; "
        "one warm-up flood per server start; order flips every repeat. "
        f"{os.cpu_count()} cores shared with other work: read the ratios, not the rates.",
        "Lowest share delivered (QoS 0 may drop under a flood): "
        + ", ".join(f"{key} {share:.1%}" for key, share in sorted(delivered.items())),
        *PROFILE_READING,
        "Where the gateway spends its time during the QoS 1 flood (py-spy, 4 s):",
        *profiled,
    ]
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        _client(sys.argv[2:])
    else:
        main(run)
