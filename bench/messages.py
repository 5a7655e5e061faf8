"""Messages: messages/s and p99 latency device -> service, QoS 0 and QoS 1, Tether vs Mosquitto.

The issue: "``bench/`` compares messages/s and p99 latency (QoS 0 and QoS 1, device ->
service) against Mosquitto in the same run; goal >= 1.0x." Tether's gateway (``tether cloud
serve``, log at WARNING) and Mosquitto (``bench.peers``, the same server certificate and client
CAs) run side by side in one run; each repeat measures both, the order flipping every repeat.

Per measurement two client processes (paho-mqtt, MQTT 5, mutual TLS; the same code for both
servers) run this module as ``python -m bench.messages client ...``:

- the service (a service identity) subscribes to ``devices/+/telemetry`` at the QoS measured
  and records, per message, the receive time minus the send time stamped in the payload (the
  clocks are one: ``CLOCK_MONOTONIC`` is system-wide on Linux);
- the device publishes ``MESSAGES`` messages of 64 bytes to ``devices/<serial>/telemetry``:
  QoS 0 as fast as paho writes them, QoS 1 with ``WINDOW`` messages in flight (the stamp is
  taken when the message is handed to paho, so paho's own queueing counts as latency).

messages/s = messages received / (last receive - first send); p99 = 99th percentile latency of
the received messages. With a flood, the latency is mostly queueing in whichever part is the
bottleneck; the notes say which (the servers' CPU, and a py-spy profile of the gateway).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.common import Result, cpu_seconds, main, percentile, profile
from bench.peers import Server, mosquitto_server, tether_server
from bench.world import World, add_service, build_world

MESSAGES = 20_000
WINDOW = 64  # QoS 1 messages in flight (paho's max_inflight_messages)
PAYLOAD = 64
GOAL = 1.0
SERVICE = "bench-consumer"
STAMP = struct.Struct("!Q")


def _client(argv: list[str]) -> None:
    """A measuring client process: ``client sub|pub PORT QOS CA CERT KEY CLIENT_ID TOPIC``."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    role, port, qos, ca, cert, key, client_id, topic = argv
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
    )
    client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    client.max_inflight_messages_set(WINDOW)
    client.max_queued_messages_set(0)
    connected, subscribed, done = threading.Event(), threading.Event(), threading.Event()
    latencies: list[int] = []
    receive_times = [0, 0]  # first, last
    in_flight = threading.Semaphore(WINDOW)
    client.on_connect = lambda _c, _u, _f, _reason, _p: connected.set()
    client.on_subscribe = lambda _c, _u, _m, _codes, _p: subscribed.set()

    def received(_c: object, _u: object, message: paho.MQTTMessage) -> None:
        now = time.monotonic_ns()
        if not latencies:
            receive_times[0] = now
        receive_times[1] = now
        latencies.append(now - STAMP.unpack_from(message.payload)[0])
        if len(latencies) >= MESSAGES:
            done.set()

    client.on_message = received
    client.on_publish = lambda _c, _u, _mid, _reason, _p: in_flight.release()
    client.connect("127.0.0.1", int(port), keepalive=60)
    client.loop_start()
    if not connected.wait(30):
        raise SystemExit("no CONNACK")
    if role == "sub":
        client.subscribe(topic, qos=int(qos))
        if not subscribed.wait(30):
            raise SystemExit("no SUBACK")
        print("ready", flush=True)
        # Ends when every message came, or 5 s after the publisher said it finished.
        finished = sys.stdin.readline().strip()
        if finished == "sent":
            done.wait(5)
        print(json.dumps({"received": len(latencies), "latencies_ns": latencies,
                          "first_receive_ns": receive_times[0],
                          "last_receive_ns": receive_times[1]}), flush=True)  # fmt: skip
    else:
        filler = b"x" * (PAYLOAD - STAMP.size)
        print(json.dumps({"first_send_ns": time.monotonic_ns()}), flush=True)
        for _ in range(MESSAGES):
            if int(qos):
                in_flight.acquire()
            client.publish(topic, STAMP.pack(time.monotonic_ns()) + filler, qos=int(qos))
        if int(qos):
            for _ in range(WINDOW):
                in_flight.acquire(timeout=30)
        print("sent", flush=True)
    client.disconnect()
    client.loop_stop()


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.messages", "client", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip


def measure(server: Server, world: World, service: tuple[Path, Path], qos: int) -> dict:
    """One flood of ``MESSAGES`` at ``qos`` through ``server``: rate, p99, server CPU."""
    ca = str(world.settings.pinned_ca)
    serial = world.serials()[0]
    sub = _spawn(["sub", str(server.port), str(qos), ca, str(service[0]), str(service[1]),
                  SERVICE, "devices/+/telemetry"])  # fmt: skip
    assert sub.stdin is not None and sub.stdout is not None
    if sub.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{server.name}: the subscriber failed: {sub.communicate()[1][-500:]}")
    cpu_before, wall_before = cpu_seconds(server.pid), time.monotonic()
    pub = _spawn(["pub", str(server.port), str(qos), ca,
                  str(world.identities / "id-0.crt"), str(world.identities / "id-0.key"),
                  serial, f"devices/{serial}/telemetry"])  # fmt: skip
    try:
        out, err = pub.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        pub.kill()
        sub.kill()
        raise RuntimeError(f"{server.name}: the publisher did not finish in 600 s") from None
    if pub.returncode != 0 or "sent" not in out:
        sub.kill()
        raise RuntimeError(f"{server.name}: the publisher failed: {err[-500:]}")
    first_send = json.loads(out.splitlines()[0])["first_send_ns"]
    sub_out, sub_err = sub.communicate("sent\n", timeout=60)
    cores = (cpu_seconds(server.pid) - cpu_before) / (time.monotonic() - wall_before)
    if sub.returncode != 0:
        raise RuntimeError(f"{server.name}: the subscriber failed: {sub_err[-500:]}")
    report = json.loads(sub_out.strip().splitlines()[-1])
    latencies = report["latencies_ns"]
    if not latencies:
        raise RuntimeError(f"{server.name}: no message arrived at QoS {qos}")
    last = report["last_receive_ns"]
    return {
        "rate": len(latencies) / ((last - first_send) / 1e9),
        "p99_ms": percentile(latencies, 0.99) / 1e6,
        "delivered": len(latencies) / MESSAGES,
        "cores": cores,
    }


def run(work: Path, repeats: int) -> Result:
    result = Result("messages")
    world = build_world(work / "world", identities=1)
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
        f"{MESSAGES:,} messages of {PAYLOAD} bytes per measurement, one device -> one service "
        f"subscribed to devices/+/telemetry; QoS 0 flooded, QoS 1 with {WINDOW} in flight; "
        "paho-mqtt 2 clients (MQTT 5, mutual TLS), one process each, the same for both "
        "servers; one warm-up flood per server start; order flips every repeat. "
        f"{os.cpu_count()} cores shared with other work: read the ratios, not the rates.",
        "Lowest share delivered (QoS 0 may drop under a flood): "
        + ", ".join(f"{key} {share:.1%}" for key, share in sorted(delivered.items())),
        "Where the gateway spends its time during the QoS 1 flood (py-spy, 4 s):",
        *profiled,
    ]
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        _client(sys.argv[2:])
    else:
        main(run)
