"""Renewal storm: every connected device renews at once; connect p99 during it vs quiet
(issue 16: the storm must not push connect p99 past 2x its quiet value).

``STORM`` devices hold MQTT sessions to a running gateway with the enrollment handler (in this
process, on a uvloop thread, as in ``bench.enrollment``); on one signal each publishes
``$tether/renew`` with a CSR (its own key: a renewal; from the second repeat on a new key: a
rotation) and waits for its certificate. While they do, the C load generator
(``bench/loadgen.c``) makes full mutual-TLS handshakes + CONNECT/CONNACK with other
identities; the same run without the storm just before is the quiet value.
Quiet and storm runs alternate, ``repeats`` times each. Clients run in forked processes.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import Result, main
from bench.peers import build_loadgen, run_loadgen
from bench.world import build_world, seed_registry, write_identities

STORM = 150
LOADGEN_IDENTITIES = 50
LOADGEN_THREADS = 4
SECONDS = 3.0
GOAL = 2.0


def _storm_client(conn: Any, port: int, ca: str, directory: str, count: int, rotate: bool) -> None:
    """Connect ``count`` devices, then on the signal renew (or rotate) them all at once."""
    import paho.mqtt.client as paho
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    base = Path(directory)
    serials = (base / "serials.txt").read_text().split()[:count]
    replies: queue.Queue[bool] = queue.Queue()
    connected = threading.Semaphore(0)
    clients, requests = [], []
    for index, serial in enumerate(serials):
        key = serialization.load_pem_private_key((base / f"id-{index}.key").read_bytes(), None)
        signer = ec.generate_private_key(ec.SECP256R1()) if rotate else key
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, serial)]))
            .sign(signer, hashes.SHA256())  # type: ignore[arg-type]
        )
        requests.append(json.dumps({"csr": csr.public_bytes(serialization.Encoding.PEM).decode()}))
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=serial,
            protocol=paho.MQTTv5,
        )  # fmt: skip
        client.tls_set(
            ca_certs=ca,
            certfile=str(base / f"id-{index}.crt"),
            keyfile=str(base / f"id-{index}.key"),
        )
        client.on_message = lambda _c, _u, m: replies.put(b'"certificate"' in m.payload)
        client.on_connect = lambda *_a: connected.release()
        client.connect("127.0.0.1", port)
        client.loop_start()
        clients.append(client)
    ready = sum(connected.acquire(timeout=30) for _ in clients)
    conn.send(ready)
    conn.recv()  # go
    started = time.perf_counter()
    for index, client in enumerate(clients):
        properties = Properties(PacketTypes.PUBLISH)
        properties.ResponseTopic = f"$tether/renew-reply/{index}"
        properties.CorrelationData = str(index).encode()
        client.publish("$tether/renew", requests[index], qos=1, properties=properties)
    renewed = 0
    deadline = time.perf_counter() + 60
    for _ in clients:
        try:
            renewed += replies.get(timeout=max(0.01, deadline - time.perf_counter()))
        except queue.Empty:
            break
    elapsed = time.perf_counter() - started
    for client in clients:
        client.loop_stop()
        client.disconnect()
    conn.send((renewed, elapsed))


def run(work: Path, repeats: int) -> Result:
    """Connect p99 quiet and during a renewal storm, ``repeats`` times each."""
    from tether.cloud.enrollment import EnrollmentService
    from tether.cloud.enrollment.mqtt import MqttEnrollment
    from tether.cloud.loop_thread import CloudThread
    from tether.cloud.registry import Registry
    from tether.cloud.service import CloudService

    result = Result("renewal")
    world = build_world(work / "world", identities=LOADGEN_IDENTITIES)
    storm_dir = work / "storm"
    storm_certs = write_identities(storm_dir, world.device_ca, STORM, prefix="storm")
    seed_registry(world.settings.database_url, world.device_ca, storm_certs, STORM)
    loadgen = build_loadgen(work)
    registry = Registry.open(world.settings.database_url)
    enrollment = EnrollmentService(registry, world.device_ca, chain_extra=(world.root.certificate,))
    cloud = CloudThread(CloudService(registry, world.settings.gateway_settings(port=0)))
    cloud.start()
    handler = MqttEnrollment(enrollment, max_in_flight=STORM * 2)

    async def attach() -> None:
        handler.attach(cloud.service.gateway.broker)

    cloud.call(attach())
    quiet = result.figure("quiet_p99", "connect p99, quiet", "ms")
    storm = result.figure("storm_p99", "connect p99 during the renewal storm", "ms")
    ratio = result.figure("storm_vs_quiet", "storm / quiet p99", "x")
    renew_rate = result.figure("renew_rate", "renewals/s in the storm", "/s")
    ca_file = str(world.settings.pinned_ca)
    ctx = multiprocessing.get_context("fork")
    try:
        for repeat in range(repeats):
            calm = run_loadgen(
                loadgen, cloud.port, world.identities, threads=LOADGEN_THREADS, duration=SECONDS
            )
            quiet.runs.append(calm["latency_ms"]["p99"])
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_storm_client,
                args=(child, cloud.port, ca_file, str(storm_dir), STORM, repeat > 0),
                daemon=True,
            )  # fmt: skip
            proc.start()
            if parent.recv() != STORM:
                raise RuntimeError("not every storm device connected")
            parent.send("go")
            stormy = run_loadgen(
                loadgen, cloud.port, world.identities, threads=LOADGEN_THREADS, duration=SECONDS
            )
            renewed, elapsed = parent.recv()
            proc.join(30)
            if renewed != STORM:
                raise RuntimeError(f"only {renewed} of {STORM} devices renewed")
            storm.runs.append(stormy["latency_ms"]["p99"])
            ratio.runs.append(storm.runs[-1] / quiet.runs[-1])
            renew_rate.runs.append(renewed / elapsed)
    finally:
        cloud.call(handler.close())
        cloud.close()
        registry.close()
    measured = ratio.median
    result.target("connect p99 storm vs quiet", measured, "x", f"<= {GOAL:g}x", measured <= GOAL)
    result.notes.append(
        f"{STORM} connected devices renew (same key) at once over $tether/renew while the load "
        f"generator connects {LOADGEN_IDENTITIES} other identities on {LOADGEN_THREADS} "
        f"threads for {SECONDS:g} s; quiet = the same load generator run alone just before. "
        "The first repeat renews with the same key; later ones rotate to a new key (a "
        "same-key request again would be a retry, answered without signing). Gateway, "
        "enrollment and clients share the machine's 2 cores."
    )
    return result


if __name__ == "__main__":
    main(run, default_repeats=1)
