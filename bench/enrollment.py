"""Enrollment: certificates/s through the enroll operation, over MQTT and over EST, next to
the library's rate in the same run (issue 16).

- ``library_rate``: ``IssuingCA.issue_device_certificate`` on pre-made CSRs, one thread.
- ``service_rate``: ``EnrollmentService.enroll`` with one-time tokens from 8 threads: CSR
  checks, signing and the registry write (device, certificate, enrollment and audit rows,
  grouped commits on SQLite), every certificate committed before it is returned.
- ``mqtt_rate``: claim-certificate connections publishing ``$tether/enroll`` requests
  (Response Topic + Correlation Data, 32 in flight each) to a running gateway with the
  enrollment handler; replies with a certificate per second.
- ``est_rate``: ``simpleenroll`` with a token over HTTPS, a new TLS connection per request
  (as curl does), from client threads.

The cloud runs in this process on a uvloop thread; clients run in forked processes so they do
not share its GIL. Targets (the issue's): each enroll path >= 2,000 certificates/s and >= 50 %
of the library rate. On the 2-core reference machine the clients and the server share the
cores, so the figures are a floor.
"""

from __future__ import annotations

import base64
import http.client
import json
import multiprocessing
import queue
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import CertificateSigningRequestBuilder, Name, NameAttribute
from cryptography.x509.oid import NameOID

from bench.common import Result, main
from tether.pki import Role, RootCA, generate_key, load_csr
from tether.pki.store import pem

DER = serialization.Encoding.DER
SECONDS = 4.0
SERVICE_THREADS = 16
MQTT_CLIENTS = 2
MQTT_WINDOW = 32
EST_THREADS = 8
TARGET = 2000.0


def _csrs(prefix: str, count: int) -> list[tuple[str, bytes]]:
    out = []
    for index in range(count):
        serial = f"{prefix}-{index:06d}"
        csr = (
            CertificateSigningRequestBuilder()
            .subject_name(Name([NameAttribute(NameOID.COMMON_NAME, serial)]))
            .sign(generate_key(), hashes.SHA256())
        )
        out.append((serial, csr.public_bytes(serialization.Encoding.PEM)))
    return out


def _mqtt_client(
    conn: Any, port: int, ca: str, name: str, cert: str, key: str, requests: list[str]
) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    replies: queue.Queue[bool] = queue.Queue()
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"claim.{name}",
        protocol=paho.MQTTv5,
    )
    client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    client.on_message = lambda _c, _u, m: replies.put(b'"certificate"' in m.payload)
    client.connect("127.0.0.1", port)
    client.loop_start()
    conn.send("ready")
    stop_at = conn.recv()
    ok = sent = 0
    in_flight = 0
    while time.time() < stop_at and sent < len(requests):
        while in_flight < MQTT_WINDOW and sent < len(requests):
            properties = Properties(PacketTypes.PUBLISH)
            properties.ResponseTopic = f"$tether/reply/{sent}"
            properties.CorrelationData = str(sent).encode()
            client.publish("$tether/enroll", requests[sent], qos=1, properties=properties)
            sent += 1
            in_flight += 1
        try:
            ok += replies.get(timeout=max(0.01, stop_at - time.time()))
            in_flight -= 1
        except queue.Empty:
            break
    client.loop_stop()
    conn.send(ok)


def _est_client(conn: Any, port: int, ca: str, work: list[tuple[str, str]]) -> None:
    context = ssl.create_default_context(cafile=ca)
    items: queue.Queue[tuple[str, str]] = queue.Queue()
    for item in work:
        items.put(item)
    conn.send("ready")
    stop_at = conn.recv()
    counts = [0] * EST_THREADS

    def worker(index: int) -> None:
        while time.time() < stop_at:
            try:
                token, body = items.get_nowait()
            except queue.Empty:
                return
            connection = http.client.HTTPSConnection("127.0.0.1", port, context=context)
            connection.request(
                "POST", "/.well-known/est/simpleenroll", body=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/pkcs10"},
            )  # fmt: skip
            counts[index] += connection.getresponse().status == 200
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(EST_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    conn.send(sum(counts))


def _drive(target: Any, args: tuple[Any, ...], processes: int, seconds: float) -> float:
    ctx = multiprocessing.get_context("fork")
    pipes, children = [], []
    for index in range(processes):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=target, args=(child, *args[index]), daemon=True)
        proc.start()
        pipes.append(parent)
        children.append(proc)
    for parent in pipes:
        parent.recv()
    started = time.time()
    for parent in pipes:
        parent.send(started + seconds)
    total = sum(parent.recv() for parent in pipes)
    elapsed = time.time() - started
    for proc in children:
        proc.join(10)
    return total / elapsed


def run(work: Path, repeats: int) -> Result:
    """Library, service, MQTT and EST rates, ``repeats`` times each."""
    from tests.support.pki import Issued

    from tether.cloud.enrollment import Credential, CredentialKind, EnrollmentService
    from tether.cloud.enrollment.est import EstServer
    from tether.cloud.enrollment.mqtt import MqttEnrollment
    from tether.cloud.loop_thread import CloudThread
    from tether.cloud.operations import AdminOperations
    from tether.cloud.registry import CARole, Registry
    from tether.cloud.service import CloudService
    from tether.cloud.setup import init_data_dir

    result = Result("enrollment")
    root = RootCA.generate(common_name="Bench Root")
    ca = root.create_issuing_ca(common_name="Bench Operational CA", role=Role.DEVICE)
    server_ca = root.create_issuing_ca(common_name="Bench Server CA", role=Role.SERVER)
    settings = init_data_dir(work / "data", server_ca=server_ca, root_ca=pem(root.certificate))
    registry = Registry.open(settings.database_url)
    registry.register_ca(ca.certificate, role=CARole.DEVICE, actor="bench")
    enrollment = EnrollmentService(registry, ca, chain_extra=(root.certificate,))
    admin = AdminOperations(registry, root_certificate=root.certificate, online_ca=ca)
    cloud = CloudThread(CloudService(registry, settings.gateway_settings(port=0)))
    cloud.start()
    handler = MqttEnrollment(enrollment, threads=SERVICE_THREADS, max_in_flight=256)

    async def attach() -> None:
        handler.attach(cloud.service.gateway.broker)

    cloud.call(attach())
    est = EstServer(
        enrollment, cloud.service.authority, certificate_chain=settings.server_chain,
        private_key=settings.server_key, port=0, threads=SERVICE_THREADS,
    )  # fmt: skip
    est_port = cloud.call(est.start())
    # One claim per client connection: a claim's sessions share one client id (its name), so
    # two connections of one claim take each other's session over (see docs/decisions.md).
    claim_files = []
    for index in range(MQTT_CLIENTS):
        claim = admin.create_claim(f"bench{index}", valid_for=timedelta(days=2), actor="bench")
        assert claim.private_key_pem is not None
        claim_key = serialization.load_pem_private_key(claim.private_key_pem.encode(), None)
        claim_cert = x509.load_pem_x509_certificate(claim.certificate_pem.encode())
        claim_files.append(Issued(claim_cert, claim_key).write(work, f"claim{index}"))
    ca_file = str(settings.pinned_ca)
    try:
        for repeat in range(repeats):
            pool = _csrs(f"lib{repeat}", 600)
            started, count = time.perf_counter(), 0
            while time.perf_counter() - started < SECONDS / 2:
                serial, data = pool[count % len(pool)]
                ca.issue_device_certificate(load_csr(data), serial)
                count += 1
            library = count / (time.perf_counter() - started)
            result.figure("library_rate", "library", "certificates/s").runs.append(library)

            tokens = [
                (admin.create_enrollment_token(s, actor="bench").token, data)
                for s, data in _csrs(f"svc{repeat}", 3000)
            ]
            done = 0
            stop_at = time.perf_counter() + SECONDS

            def one(item: tuple[str, bytes], stop_at: float = stop_at) -> int:
                if time.perf_counter() > stop_at:
                    return 0
                enrollment.enroll(item[1], Credential(CredentialKind.TOKEN, token=item[0]))
                return 1

            started = time.perf_counter()
            with ThreadPoolExecutor(SERVICE_THREADS) as pool_threads:
                done = sum(pool_threads.map(one, tokens))
            service = done / (time.perf_counter() - started)
            result.figure("service_rate", "enroll operation", "certificates/s").runs.append(service)

            requests = [
                json.dumps({"csr": data.decode()}) for _, data in _csrs(f"mq{repeat}", 4000)
            ]
            share = len(requests) // MQTT_CLIENTS
            mqtt = _drive(
                _mqtt_client,
                tuple((cloud.port, ca_file, f"bench{i}", str(claim_files[i].cert_path),
                       str(claim_files[i].key_path), requests[i * share:(i + 1) * share])
                      for i in range(MQTT_CLIENTS)),
                MQTT_CLIENTS, SECONDS,
            )  # fmt: skip
            result.figure("mqtt_rate", "enroll over MQTT", "certificates/s").runs.append(mqtt)

            est_work = [
                (admin.create_enrollment_token(s, actor="bench").token,
                 base64.b64encode(load_csr(data).public_bytes(DER)).decode())
                for s, data in _csrs(f"est{repeat}", 2000)
            ]  # fmt: skip
            est_rate = _drive(_est_client, ((est_port, ca_file, est_work),), 1, SECONDS)
            result.figure("est_rate", "enroll over EST", "certificates/s").runs.append(est_rate)
    finally:
        cloud.call(est.stop())
        cloud.call(handler.close())
        cloud.close()
        registry.close()
    library = result["library_rate"].median
    for key, label in (("service_rate", "enroll operation"), ("mqtt_rate", "enroll over MQTT"),
                       ("est_rate", "enroll over EST")):  # fmt: skip
        rate = result[key].median
        result.target(
            f"{label} vs library", rate / library, "x", ">= 0.5x and >= 2,000/s",
            rate / library >= 0.5 and rate >= TARGET,
        )  # fmt: skip
    result.notes.append(
        f"{SERVICE_THREADS} enrollment threads; MQTT {MQTT_CLIENTS} claim connections x "
        f"{MQTT_WINDOW} in flight; EST {EST_THREADS} client threads, one TLS connection per "
        "request; clients in forked processes on the same 2 cores."
    )
    return result


if __name__ == "__main__":
    main(run, default_repeats=1)
