"""Two cloud "hosts" on loopback, two gateway workers each, one PostgreSQL, a two-node NATS.

Host A's workers share one port (SO_REUSEPORT) and talk to NATS node 0 (node 1 as fallback);
host B's share another port and talk to node 1. Every worker is a real ``CloudService`` with
its own registry connection, change feed (PostgreSQL LISTEN/NOTIFY) and NATS connection, run
on its own uvloop thread: what ``tether cloud serve --workers 2 --role ...`` runs in each
worker process, without four interpreter start-ups. Clients are paho (MQTT 5 over mutual TLS)
and a raw client where the test needs to see DISCONNECT itself.

What must hold (issue 15, "Done when"): a device on A publishes and a service on B receives
it with the right ``tether-sender``, and the service's command comes back; a revocation made
through host B's API drops the device's live session on host A; a client id taking over a
session across hosts sends the old one DISCONNECT 0x8E; killing a NATS node mid-stream keeps
what the README promises for QoS 1 (no duplicate, per-publisher order, every message
published once the worker has failed over arrives) and loses no revocation. Issue 17 across
workers: a shared group with a member on each host gets each message once in total, and a
persistent session parked on host A resumes on host B with its queue once, in order, while
A's stand-in stops queueing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import mqtt5
import pytest
from mqtt5 import DisconnectReasonCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.cloud.api.conftest import pinned_context
from tests.cloud.conftest import ACTOR, Cloud, CloudPKI, serving
from tests.natsd import nats_cluster
from tests.postgres import throwaway_postgres
from tests.support.mqtt import PahoClient, RawClient, paho_connect
from tests.support.pki import Issued
from tether.cloud.admin import create_admin
from tether.cloud.api import ApiServer, create_app
from tether.cloud.bus.nats import NatsBus
from tether.cloud.bus.natsd import LocalNatsServer
from tether.cloud.operations import AdminOperations
from tether.cloud.registry import CARole, Registry
from tether.cloud.service import CloudService
from tether.cloud.settings import CloudSettings
from tether.cloud.setup import init_data_dir
from tether.pki import sha256_fingerprint
from tether.pki.store import pem

SERVICE = "billing"


@dataclass
class Host:
    """One cloud host: its port and its workers (one ``Cloud`` view per worker)."""

    port: int
    workers: list[Cloud]


@dataclass
class Cluster:
    registry: Registry
    a: Host
    b: Host
    nats: list[LocalNatsServer]
    pki: CloudPKI
    files: Path
    api: httpx.Client

    def device(self, serial: str) -> Issued:
        return self.a.workers[0].console_device(serial)

    def service(self, name: str) -> Issued:
        return self.b.workers[0].service_identity(name)

    def paho(self, host: Host, identity: Issued, client_id: str):  # type: ignore[no-untyped-def]
        return paho_connect(host.port, self.pki.root_path, identity, client_id)

    def sessions(self, host: Host) -> set[str]:
        return {i.name for w in host.workers for i in w.service.gateway.sessions()}


def _host(
    settings: CloudSettings,
    url: str,
    pki: CloudPKI,
    files: Path,
    nats: list[str],
    stack: ExitStack,
) -> Host:
    """Two workers on one port; the stack stops them (workers first, then registries)."""
    workers: list[Cloud] = []
    port = 0
    for _ in range(2):
        registry = Registry.open(url)
        stack.callback(registry.close)
        gateway = replace(
            settings.gateway_settings(port=port, connect_timeout=5.0), reuse_port=True
        )
        service = CloudService(registry, gateway, bus=NatsBus(nats), mqtt_state=True)
        running = serving(service)
        stack.callback(running.close)
        port = running.port
        workers.append(Cloud(settings, registry, running, pki, files))
    return Host(port, workers)


@pytest.fixture(scope="module")
def cluster(cloud_pki: CloudPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cluster")
    files = base / "identities"
    files.mkdir()
    with throwaway_postgres() as url, nats_cluster(base / "nats", nodes=2) as nodes:
        settings = init_data_dir(
            base / "data",
            server_ca=cloud_pki.server_ca,
            root_ca=pem(cloud_pki.root.certificate),
            database_url=url,
        )
        registry = Registry.open(url)
        registry.register_ca(cloud_pki.device_ca.certificate, role=CARole.DEVICE, actor=ACTOR)
        registry.register_ca(cloud_pki.service_ca.certificate, role=CARole.SERVICE, actor=ACTOR)
        with ExitStack() as stack:
            stack.callback(registry.close)
            a = _host(settings, url, cloud_pki, files, [nodes[0].url, nodes[1].url], stack)
            b = _host(settings, url, cloud_pki, files, [nodes[1].url, nodes[0].url], stack)
            # Host B's admin API, served as the API process serves it, over B's registry.
            b0 = b.workers[0]
            token = create_admin(registry, "alice", actor="test:setup").token
            server = ApiServer(
                create_app(
                    b0.registry,
                    root_certificate=cloud_pki.root.certificate,
                    operations=AdminOperations(
                        b0.registry, root_certificate=cloud_pki.root.certificate, online_ca=None
                    ),
                ),
                host="127.0.0.1",
                port=0,
                certificate_chain=settings.server_chain,
                private_key=settings.server_key,
            )
            api_port = b0.running.call(server.start())
            stack.callback(lambda: b0.running.call(server.stop(), timeout=15))
            api = stack.enter_context(
                httpx.Client(
                    base_url=f"https://127.0.0.1:{api_port}",
                    verify=pinned_context(b0),
                    timeout=10.0,
                    headers={"Authorization": f"Bearer {token}"},
                )
            )
            yield Cluster(registry, a, b, nodes, cloud_pki, files, api)


def _forged() -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = [("tether-sender", "someone-else")]
    return properties


def _until(condition, timeout: float = 10.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_device_on_host_a_reaches_a_service_on_host_b_and_back(cluster: Cluster) -> None:
    device = cluster.paho(cluster.a, cluster.device("CL-0001"), "CL-0001")
    service = cluster.paho(cluster.b, cluster.service(SERVICE), SERVICE)
    try:
        assert service.subscribe("devices/+/telemetry")[0].value == 1
        assert device.subscribe("devices/CL-0001/commands/#")[0].value == 1
        # Interest crosses the NATS route asynchronously: publish until the first arrives.
        deadline = time.monotonic() + 10
        while service.messages.empty() and time.monotonic() < deadline:
            device.client.publish("devices/CL-0001/telemetry", b"21.5", qos=1, properties=_forged())
            time.sleep(0.2)
        received = service.messages.get(timeout=1)
        assert received.topic == "devices/CL-0001/telemetry"
        assert received.payload == b"21.5"
        assert received.properties.UserProperty == [("tether-sender", "CL-0001")]

        deadline = time.monotonic() + 10
        while device.messages.empty() and time.monotonic() < deadline:
            service.client.publish("devices/CL-0001/commands/reboot", b"now", qos=1)
            time.sleep(0.2)
        command = device.messages.get(timeout=1)
        assert command.payload == b"now"
        assert command.properties.UserProperty == [("tether-sender", SERVICE)]
    finally:
        device.stop()
        service.stop()


def test_a_revocation_through_host_b_drops_the_session_on_host_a(cluster: Cluster) -> None:
    identity = cluster.device("CL-0002")
    device = cluster.paho(cluster.a, identity, "CL-0002")
    try:
        _until(lambda: "CL-0002" in cluster.sessions(cluster.a), what="the session on host A")
        fingerprint = sha256_fingerprint(identity.certificate)
        started = time.monotonic()
        answer = cluster.api.post(
            f"/api/v1/certificates/{fingerprint}/revoke", json={"reason": "key_compromise"}
        )
        assert answer.status_code == 200, answer.text
        reason = device.disconnects.get(timeout=10)
        elapsed = time.monotonic() - started
        assert reason.value == DisconnectReasonCode.ADMINISTRATIVE_ACTION
        assert elapsed < 5  # generous: the bench measures the p99
        _until(lambda: "CL-0002" not in cluster.sessions(cluster.a), what="the drop")
    finally:
        device.client.loop_stop()


def test_a_client_id_takes_over_its_session_across_hosts(cluster: Cluster) -> None:
    identity = cluster.device("CL-0003")
    first = RawClient(cluster.a.port, cluster.a.workers[0].tls_context(identity))
    second = None
    try:
        assert first.connect("CL-0003").reason_code == 0
        second = RawClient(cluster.b.port, cluster.b.workers[0].tls_context(identity))
        assert second.connect("CL-0003").reason_code == 0
        seen = first.wait_closed(timeout=10)
        assert [type(p) for p in seen] == [mqtt5.DisconnectPacket]
        assert seen[0].reason_code == DisconnectReasonCode.SESSION_TAKEN_OVER
        _until(lambda: "CL-0003" not in cluster.sessions(cluster.a), what="A's session to end")
        assert "CL-0003" in cluster.sessions(cluster.b)
        second.send(mqtt5.PingReqPacket())
        assert isinstance(second.recv(), mqtt5.PingRespPacket)  # the new session lives on
    finally:
        first.close()
        if second is not None:
            second.close()


def _shared_members(cluster: Cluster, group: str, *names: str) -> list[PahoClient]:
    members = []
    for name, host in zip(names, (cluster.a, cluster.b), strict=False):
        member = cluster.paho(host, cluster.service(name), name)
        members.append(member)
        assert member.subscribe(f"$share/{group}/devices/+/telemetry")[0].value == 1
    return members


def _collect(members: list[PahoClient], into: list[list[bytes]], total: int) -> bool:
    for member, got in zip(members, into, strict=True):
        while not member.messages.empty():
            got.append(member.messages.get().payload)
    return sum(len(got) for got in into) >= total


def test_a_shared_group_across_hosts_gets_each_message_once(cluster: Cluster) -> None:
    device = cluster.paho(cluster.a, cluster.device("CL-0006"), "CL-0006")
    members = _shared_members(cluster, "ingest", "share-a", "share-b")
    solo = _shared_members(cluster, "solo", "solo-a")[0]  # a group on host A only
    topic = "devices/CL-0006/telemetry"
    try:
        # Queue-group interest crosses the NATS route asynchronously: warm up until both
        # members of "ingest" have had one message (NATS picks one worker per message).
        warm: list[list[bytes]] = [[], []]
        deadline = time.monotonic() + 10
        while not all(warm) and time.monotonic() < deadline:
            device.client.publish(topic, b"w", qos=1).wait_for_publish(timeout=10)
            _collect(members, warm, 0)
            time.sleep(0.05)
        assert all(warm), "a member never got a message"
        time.sleep(0.3)  # the warm-up's last copies
        _collect([*members, solo], [[], [], []], 0)

        count = 40
        for number in range(count):
            device.client.publish(topic, b"%d" % number, qos=1).wait_for_publish(timeout=10)
        got: list[list[bytes]] = [[], []]
        _until(lambda: _collect(members, got, count), what="every shared message")
        solo_got: list[list[bytes]] = [[]]
        _until(lambda: _collect([solo], solo_got, count), what="the one-host group")
        time.sleep(0.3)  # a duplicate would arrive now
        _collect(members, got, count)
        assert sorted(got[0] + got[1], key=int) == [b"%d" % n for n in range(count)]
        assert got[0] and got[1]  # both members got some
        assert sorted(solo_got[0], key=int) == [b"%d" % n for n in range(count)]

        members[1].stop()  # a member leaving: the other gets all
        _until(lambda: "share-b" not in cluster.sessions(cluster.b), what="share-b gone")
        for number in range(count, count + 10):
            device.client.publish(topic, b"%d" % number, qos=1).wait_for_publish(timeout=10)
        rest: list[list[bytes]] = [[]]
        _until(lambda: _collect(members[:1], rest, 10), what="the remaining member")
        assert sorted(rest[0], key=int) == [b"%d" % n for n in range(count, count + 10)]
    finally:
        for client in (device, *members, solo):
            client.stop()


def _persistent(cluster: Cluster, host: Host, identity: Issued, serial: str) -> RawClient:
    client = RawClient(host.port, host.workers[0].tls_context(identity))
    client.send(
        mqtt5.ConnectPacket(serial, clean_start=False, session_expiry_interval=600, keep_alive=30)
    )
    ack = client.recv()
    assert ack.reason_code == 0
    client.session_present = ack.session_present  # type: ignore[attr-defined]
    return client


def test_a_session_parked_on_host_a_resumes_on_host_b(cluster: Cluster) -> None:
    serial = "CL-0007"
    key = ("device", serial)
    identity = cluster.device(serial)
    device = _persistent(cluster, cluster.a, identity, serial)
    commands = mqtt5.TopicFilter(f"devices/{serial}/commands/#", max_qos=mqtt5.QoS.AT_LEAST_ONCE)
    device.send(mqtt5.SubscribePacket(1, [commands]))
    assert isinstance(device.recv(), mqtt5.SubAckPacket)
    device.send(mqtt5.DisconnectPacket())
    device.wait_closed()
    device.close()

    def holders(host: Host) -> list[Cloud]:
        return [
            w for w in host.workers
            if w.service.gateway.broker.sessions.parked_at(key) is not None  # type: ignore[union-attr]
        ]  # fmt: skip

    _until(lambda: len(holders(cluster.a)) == 1, what="the stand-in on host A")
    time.sleep(1.0)  # its interest crosses the NATS route asynchronously
    service = cluster.paho(cluster.b, cluster.service("commander"), "commander")
    resumed = None
    try:
        for number in range(5):
            info = service.client.publish(f"devices/{serial}/commands/c", b"%d" % number, qos=1)
            info.wait_for_publish(timeout=10)
        resumed = _persistent(cluster, cluster.b, identity, serial)
        assert resumed.session_present is True  # type: ignore[attr-defined]
        payloads = []
        for _ in range(5):
            packet = resumed.recv()
            assert isinstance(packet, mqtt5.PublishPacket), packet
            payloads.append(packet.payload)
            resumed.send(mqtt5.PubAckPacket(packet.packet_id))
        assert payloads == [b"%d" % n for n in range(5)]  # every one, once, in order
        assert holders(cluster.a) == []  # A's stand-in is gone: it queues nothing more
        service.client.publish(f"devices/{serial}/commands/c", b"live", qos=1).wait_for_publish(
            timeout=10
        )
        packet = resumed.recv()
        assert isinstance(packet, mqtt5.PublishPacket) and packet.payload == b"live"
        resumed.send(mqtt5.PubAckPacket(packet.packet_id))
        with pytest.raises(TimeoutError):
            resumed.recv(timeout=0.5)  # nothing twice
    finally:
        service.stop()
        if resumed is not None:
            resumed.close()


def test_a_nats_node_killed_mid_stream(cluster: Cluster) -> None:
    """QoS 1 as the README states it, and revocation, while host A's NATS node dies."""
    device = cluster.paho(cluster.a, cluster.device("CL-0004"), "CL-0004")
    victim_identity = cluster.device("CL-0005")
    victim = cluster.paho(cluster.a, victim_identity, "CL-0005")
    service = cluster.paho(cluster.b, cluster.service("stream"), "stream")
    try:
        service.subscribe("devices/CL-0004/telemetry")
        deadline = time.monotonic() + 10
        while service.messages.empty() and time.monotonic() < deadline:
            device.client.publish("devices/CL-0004/telemetry", b"-1", qos=1)
            time.sleep(0.2)
        assert not service.messages.empty(), "the stream never started"

        def publish(numbers: range) -> None:
            for number in numbers:
                info = device.client.publish(
                    "devices/CL-0004/telemetry", str(number).encode(), qos=1
                )
                info.wait_for_publish(timeout=10)  # the PUBACK
                time.sleep(0.002)

        publish(range(0, 200))
        cluster.nats[0].kill()  # host A's node, mid-stream
        killed_at = 200
        publish(range(200, 400))
        # Once host A's workers have failed over to node 1, nothing more may be lost.
        time.sleep(2.0)
        publish(range(400, 600))
        received: list[int] = []
        _until(
            lambda: _drain(service, received) and received and received[-1] == 599,
            timeout=20,
            what="the last message",
        )
        numbers = [n for n in received if n >= 0]
        assert numbers == sorted(set(numbers))  # no duplicate, publish order kept
        assert set(range(0, killed_at)) <= set(numbers)  # everything before the kill
        assert set(range(400, 600)) <= set(numbers)  # everything after the fail-over

        # Revocation does not ride on NATS: the device on host A is dropped as before.
        fingerprint = sha256_fingerprint(victim_identity.certificate)
        answer = cluster.api.post(
            f"/api/v1/certificates/{fingerprint}/revoke", json={"reason": "key_compromise"}
        )
        assert answer.status_code == 200, answer.text
        assert (
            victim.disconnects.get(timeout=10).value == DisconnectReasonCode.ADMINISTRATIVE_ACTION
        )
    finally:
        for client in (device, service):
            client.stop()
        victim.client.loop_stop()


def _drain(client, into: list[int]) -> bool:  # type: ignore[no-untyped-def]
    while not client.messages.empty():
        into.append(int(client.messages.get().payload))
    return True
