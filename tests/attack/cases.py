"""The attack matrix: one row per attack, what must happen, and how the attack is made.

Each ``run`` function makes one real attack against the running cloud (``Attack.cloud``) and
returns an ``Observation``: what the client saw (``kind`` + words) and the reason code that
was logged. ``test_matrix.py`` compares it with the row's expectation and records it for
``docs/security.md``. Kinds: ``tls`` (refused in the TLS handshake, or by an alert right
after it), ``connack:0xNN``, ``puback:0xNN``, ``suback:0xNN``, ``disconnect:0xNN``,
``closed`` (closed without an MQTT answer), ``device:<code>`` (the device agent's error).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import socket
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mqtt5
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.attack.foreign_key import ForeignKey, connect_with_foreign_key
from tests.attack.observe import (
    Observation,
    connect_attempt,
    describe,
    gateway_codes,
    logged_code,
)
from tests.cloud.conftest import ACTOR, Cloud, serving
from tests.support.mqtt import RawClient
from tests.support.pki import NOW, Issued, hostile_leaf, hostile_server, rsa_key, self_signed_leaf
from tether.cloud.gateway import GatewaySettings
from tether.cloud.operations import AdminOperations
from tether.cloud.registry import CARole, CAStatus, DeviceStatus
from tether.cloud.service import CloudService
from tether.device import CloudEndpoint, DeviceClient, DeviceIdentity, FileKey
from tether.errors import TetherError
from tether.pki import IssuingCA, RevokedEntry, Role, sha256_fingerprint
from tether.secure_element.pkcs11 import Pkcs11SecureElement

SERIAL = "ATK-000001"
OTHER = "ATK-000002"
SERVICE = "attack-watcher"


@dataclass(frozen=True)
class Attack:
    """What a case's ``run`` gets: the cloud, a scratch directory, the log, the expectation."""

    cloud: Cloud
    directory: Path
    caplog: pytest.LogCaptureFixture
    request: pytest.FixtureRequest
    codes: frozenset[str]

    def context(self, identity: Issued | None, **tls: object) -> ssl.SSLContext:
        """A client context pinned to the cloud's root, presenting ``identity`` (or nothing)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=self.cloud.pki.root_path)
        for name, value in tls.items():
            if name == "ciphers":
                context.set_ciphers(str(value))
            else:
                setattr(context, name, value)
        if identity is not None:
            context.load_cert_chain(identity.cert_path, identity.key_path)
        return context

    def attempt(
        self, identity: Issued | None, client_id: str = SERIAL, **tls: object
    ) -> Observation:
        """Handshake + CONNECT with ``identity``; the observation of how it was refused."""
        kind, words = connect_attempt(self.cloud.port, self.context(identity, **tls), client_id)
        return Observation(kind, words, logged_code(self.caplog, self.codes))

    def connected(self, serial: str = SERIAL) -> RawClient:
        """A registered device connected over MQTT (CONNACK success asserted)."""
        identity = self.cloud.console_device(serial)
        wire = RawClient(self.cloud.port, self.context(identity))
        wire.send(mqtt5.ConnectPacket(serial, clean_start=True))
        connack = wire.recv()
        assert connack is not None and connack.reason_code == mqtt5.ConnAckReasonCode.SUCCESS
        return wire

    def after_session(self, send: Callable[[RawClient], None]) -> Observation:
        """Connect as ``SERIAL``, do ``send``, and observe the gateway's first answer."""
        wire = self.connected()
        try:
            send(wire)
            packet = wire.recv()
            kind, words = describe(packet)
            if packet is None and wire.alert:
                words += f" ({wire.alert})"
        finally:
            wire.close()
        return Observation(kind, words, logged_code(self.caplog, self.codes))


# -- certificates and registry states ------------------------------------------------------


def no_certificate(a: Attack) -> Observation:
    return a.attempt(None)


def self_signed(a: Attack) -> Observation:
    a.cloud.console_device(SERIAL)  # the real device exists and is enabled
    return a.attempt(self_signed_leaf(SERIAL).write(a.directory, "self-signed"))


def unregistered_ca(a: Attack) -> Observation:
    return a.attempt(
        a.cloud.pki.device(SERIAL, ca=a.cloud.pki.stranger_ca).write(a.directory, SERIAL)
    )


def _apply_feed(a: Attack) -> None:
    """Let the service act on registry changes now (it polls every 10 ms anyway)."""
    a.cloud.running.call(a.cloud.service.apply_changes())


def deactivated_ca(a: Attack) -> Observation:
    identity = a.cloud.console_device(SERIAL)
    device_ca = a.cloud.fingerprint(a.cloud.pki.device_ca)
    a.cloud.registry.set_ca_status(device_ca, CAStatus.INACTIVE, actor=ACTOR)
    _apply_feed(a)
    return a.attempt(identity)


def revoked_issuing_ca(a: Attack) -> Observation:
    identity = a.cloud.console_device(SERIAL)
    ca = a.cloud.pki.device_ca
    # The root revokes the issuing CA on its CRL; the registry records it as revoked.
    crl = a.cloud.pki.root.build_crl([RevokedEntry(ca.certificate.serial_number, NOW)])
    assert crl.get_revoked_certificate_by_serial_number(ca.certificate.serial_number)
    a.cloud.registry.set_ca_status(a.cloud.fingerprint(ca), CAStatus.REVOKED, actor=ACTOR)
    _apply_feed(a)
    return a.attempt(identity)


def expired(a: Attack) -> Observation:
    return a.attempt(a.cloud.pki.expired_device(SERIAL).write(a.directory, "expired-device"))


def not_yet_valid(a: Attack) -> Observation:
    identity = hostile_leaf(
        a.cloud.pki.device_ca, SERIAL, not_before=NOW + dt.timedelta(days=1)
    ).write(a.directory, "future")
    return a.attempt(identity)


def revoked(a: Attack) -> Observation:
    identity = a.cloud.console_device(SERIAL)
    a.cloud.registry.revoke_certificate(
        sha256_fingerprint(identity.certificate),
        reason=x509.ReasonFlags.key_compromise,
        actor=ACTOR,
    )
    return a.attempt(identity)


def disabled(a: Attack) -> Observation:
    identity = a.cloud.console_device(SERIAL)
    a.cloud.registry.set_device_status(SERIAL, DeviceStatus.DISABLED, actor=ACTOR)
    return a.attempt(identity)


def unknown_certificate(a: Attack) -> Observation:
    return a.attempt(
        a.cloud.pki.device(SERIAL, ca=a.cloud.pki.device_ca).write(a.directory, SERIAL)
    )


def server_auth_only(a: Attack) -> Observation:
    identity = hostile_leaf(
        a.cloud.pki.device_ca, SERIAL, usages=(ExtendedKeyUsageOID.SERVER_AUTH,)
    ).write(a.directory, "server-auth")
    return a.attempt(identity)


def ca_true_leaf(a: Attack) -> Observation:
    identity = hostile_leaf(a.cloud.pki.device_ca, SERIAL, is_ca=True).write(a.directory, "ca")
    return a.attempt(identity)


def rsa_leaf(a: Attack) -> Observation:
    identity = hostile_leaf(a.cloud.pki.device_ca, SERIAL, key=rsa_key()).write(a.directory, "rsa")
    return a.attempt(identity)


def p384_leaf(a: Attack) -> Observation:
    key = ec.generate_private_key(ec.SECP384R1())
    identity = hostile_leaf(a.cloud.pki.device_ca, SERIAL, key=key).write(a.directory, "p384")
    return a.attempt(identity)


def forged_issuer(a: Attack) -> Observation:
    # Same subject as the registered device CA, another key: names the real CA, signed by
    # the lookalike.
    lookalike = a.cloud.pki.root.create_issuing_ca(common_name="E2E Device CA", role=Role.DEVICE)
    identity = hostile_leaf(
        lookalike, SERIAL, claimed_issuer=a.cloud.pki.device_ca.certificate
    ).write(a.directory, "forged")
    return a.attempt(identity)


def certificate_without_its_key(a: Attack) -> Observation:
    token = a.request.getfixturevalue("token")
    identity = a.cloud.console_device(SERIAL)
    with Pkcs11SecureElement.open(token.module, token.label, token.pin) as element:
        element.generate_key("thief-key")  # a real P-256 key, not the certificate's
    words = connect_with_foreign_key(
        a.cloud.port,
        identity.cert_path.read_bytes(),
        a.cloud.pki.root_path.read_bytes(),
        ForeignKey(token.module, token.label, token.pin, "thief-key"),
        SERIAL,
    )
    kind = "connected" if words.startswith("connected") else "tls"
    return Observation(kind, f"awscrt: {words}", logged_code(a.caplog, a.codes))


# -- MQTT ----------------------------------------------------------------------------------


def client_id_mismatch(a: Attack) -> Observation:
    a.cloud.console_device(OTHER)
    identity = a.cloud.console_device(SERIAL)
    return a.attempt(identity, client_id=OTHER)


def _publish(topic: str, qos: int, **extra: object) -> Callable[[RawClient], None]:
    def send(wire: RawClient) -> None:
        packet_id = 1 if qos else None
        wire.send(
            mqtt5.PublishPacket(topic, b"x", qos=mqtt5.QoS(qos), packet_id=packet_id, **extra)
        )

    return send


def _subscribe(topic: str) -> Callable[[RawClient], None]:
    def send(wire: RawClient) -> None:
        wire.send(
            mqtt5.SubscribePacket(1, [mqtt5.TopicFilter(topic, max_qos=mqtt5.QoS.AT_LEAST_ONCE)])
        )

    return send


def _raw(data: bytes) -> Callable[[RawClient], None]:
    return lambda wire: wire.send(data)


def publish_other_qos1(a: Attack) -> Observation:
    return a.after_session(_publish(f"devices/{OTHER}/telemetry", 1))


def publish_other_qos0(a: Attack) -> Observation:
    return a.after_session(_publish(f"devices/{OTHER}/telemetry", 0))


def reply_topic_at_another_device(a: Attack) -> Observation:
    # A service answering this request would publish to another device's commands.
    return a.after_session(
        _publish(f"devices/{SERIAL}/telemetry", 1, response_topic=f"devices/{OTHER}/commands/x")
    )


def publish_sys(a: Attack) -> Observation:
    return a.after_session(_publish("$SYS/broker/uptime", 1))


def subscribe_shared(a: Attack) -> Observation:
    # A shared subscription would let a device steal a share of another group's messages.
    return a.after_session(_subscribe(f"$share/g/devices/{SERIAL}/#"))


def subscribe_other(a: Attack) -> Observation:
    return a.after_session(_subscribe(f"devices/{OTHER}/commands/#"))


def subscribe_everything(a: Attack) -> Observation:
    return a.after_session(_subscribe("#"))


def subscribe_all_devices(a: Attack) -> Observation:
    return a.after_session(_subscribe("devices/+/telemetry"))


def subscribe_sys(a: Attack) -> Observation:
    return a.after_session(_subscribe("$SYS/#"))


def oversized(a: Attack) -> Observation:
    size = a.cloud.settings.gateway.max_packet_size + 1
    # A PUBLISH header announcing more than the advertised maximum; the body never follows.
    length = bytearray()
    value = size
    while True:
        byte, value = value % 128, value // 128
        length.append(byte | (0x80 if value else 0))
        if not value:
            break
    return a.after_session(_raw(bytes([0x30]) + bytes(length) + b"\x00\x01t" + b"x" * 1024))


def malformed_publish(a: Attack) -> Observation:
    # PUBLISH whose topic length (0xFFFF) runs past the end of the packet.
    return a.after_session(_raw(b"\x30\x05\xff\xffabc"))


def malformed_length(a: Attack) -> Observation:
    # A remaining length of five continuation bytes (MQTT allows at most four).
    return a.after_session(_raw(b"\x30\xff\xff\xff\xff\x7f"))


def qos2_publish_other(a: Attack) -> Observation:
    # QoS 2 is served (issue 17); exactly-once must not be a way around the topic policy.
    return a.after_session(_publish(f"devices/{OTHER}/telemetry", 2))


def retained_publish(a: Attack) -> Observation:
    return a.after_session(_publish(f"devices/{SERIAL}/telemetry", 1, retain=True))


def publish_before_connect(a: Attack) -> Observation:
    identity = a.cloud.console_device(SERIAL)
    wire = RawClient(a.cloud.port, a.context(identity))
    try:
        _publish(f"devices/{SERIAL}/telemetry", 0)(wire)
        packets = wire.wait_closed()
    finally:
        wire.close()
    kind, words = describe(packets[0] if packets else None)
    return Observation(kind, words, logged_code(a.caplog, a.codes))


def no_connect(a: Attack) -> Observation:
    identity = a.cloud.console_device(SERIAL)
    wire = RawClient(a.cloud.port, a.context(identity))
    try:
        packets = wire.wait_closed(timeout=a.cloud.settings.gateway.connect_timeout + 10)
    finally:
        wire.close()
    kind, words = describe(packets[0] if packets else None)
    return Observation(kind, words + " after the connect timeout", logged_code(a.caplog, a.codes))


def spoofed_sender(a: Attack) -> Observation:
    watcher_identity = a.cloud.service_identity(SERVICE)
    watcher = RawClient(a.cloud.port, a.context(watcher_identity))
    try:
        watcher.send(mqtt5.ConnectPacket(SERVICE, clean_start=True))
        assert watcher.recv().reason_code == mqtt5.ConnAckReasonCode.SUCCESS
        _subscribe("devices/+/telemetry")(watcher)
        assert isinstance(watcher.recv(), mqtt5.SubAckPacket)
        device = a.connected()
        try:
            device.send(
                mqtt5.PublishPacket(
                    f"devices/{SERIAL}/telemetry",
                    b"hello",
                    qos=mqtt5.QoS.AT_MOST_ONCE,
                    user_properties=[("tether-sender", OTHER), ("note", "forged")],
                )
            )
            delivered = watcher.recv()
        finally:
            device.close()
    finally:
        watcher.close()
    assert isinstance(delivered, mqtt5.PublishPacket)
    senders = [v for k, v in delivered.user_properties if k == "tether-sender"]
    words = f"delivered with tether-sender={','.join(senders)}"
    kind = "attributed" if senders == [SERIAL] else "misattributed"
    return Observation(kind, words, "tether-sender rewritten" if kind == "attributed" else "-")


# -- TLS parameters ------------------------------------------------------------------------


def _old_tls(version: ssl.TLSVersion) -> Callable[[Attack], Observation]:
    def run(a: Attack) -> Observation:
        identity = a.cloud.console_device(SERIAL)
        return a.attempt(
            identity,
            minimum_version=version,
            maximum_version=version,
            ciphers="DEFAULT:@SECLEVEL=0",
        )

    return run


def _ciphers(ciphers: str) -> Callable[[Attack], Observation]:
    def run(a: Attack) -> Observation:
        identity = a.cloud.console_device(SERIAL)
        return a.attempt(identity, maximum_version=ssl.TLSVersion.TLSv1_2, ciphers=ciphers)

    return run


def plaintext(a: Attack) -> Observation:
    with socket.create_connection(("127.0.0.1", a.cloud.port), timeout=5) as raw:
        raw.sendall(mqtt5.ConnectPacket(SERIAL, clean_start=True).write())
        answer = b""
        try:
            while chunk := raw.recv(4096):
                answer += chunk
        except ConnectionError:
            pass
    words = "closed" + (f" after {len(answer)} bytes of TLS alert" if answer else "")
    kind = "closed" if not answer or answer[0] == 0x15 else "answered"
    return Observation(kind, words, logged_code(a.caplog, a.codes))


# -- the device's side: the server must prove itself ---------------------------------------


def _device_against(a: Attack, server: Issued) -> Observation:
    """Run a real CloudService (same registry) with this server certificate; connect a device."""
    identity = a.cloud.console_device(SERIAL)
    settings = GatewaySettings(
        certificate_chain=server.cert_path,
        private_key=server.key_path,
        port=0,
        connect_timeout=5.0,
    )
    impostor = serving(CloudService(a.cloud.registry, settings))
    try:
        device = DeviceClient(
            DeviceIdentity.load(identity.cert_path, FileKey(identity.key_path)),
            CloudEndpoint(
                host="127.0.0.1", port=impostor.port, pinned_ca=a.cloud.settings.pinned_ca
            ),
        )
        try:
            result = device.connect(10.0)
            device.disconnect()
            return Observation("connected", f"CONNACK {result.reason_code}", "-")
        except TetherError as exc:
            # The message names the port, which changes every run.
            # The message names the port and a temporary path, which change every run.
            words = re.sub(r":\d+\b", ":<port>", exc.message.split(". The device trusts")[0])
            code = exc.code
    finally:
        impostor.close()
    authorized = "handshake_authorized" in gateway_codes(a.caplog, logging.INFO)
    return Observation(
        f"device:{code}",
        words + ("; the gateway authorized it!" if authorized else "; no MQTT session opened"),
        code,
    )


def device_mitm(a: Attack) -> Observation:
    other_root = type(a.cloud.pki.root).generate(common_name="MITM Root CA")
    mitm_ca = other_root.create_issuing_ca(common_name="MITM Server CA", role=Role.SERVER)
    return _device_against(a, hostile_server(mitm_ca).write(a.directory, "mitm"))


def device_wrong_host(a: Attack) -> Observation:
    server = hostile_server(a.cloud.pki.server_ca, dns_name="elsewhere.test", ip="10.9.9.9").write(
        a.directory, "elsewhere"
    )
    return _device_against(a, server)


def device_expired_server(a: Attack) -> Observation:
    server = hostile_server(a.cloud.pki.server_ca, not_after=NOW - dt.timedelta(days=1)).write(
        a.directory, "expired-server"
    )
    return _device_against(a, server)


# -- blast radius: a compromised CA hurts only what it issued -----------------------------


def _factory_device(a: Attack, ca: IssuingCA | None = None, serial: str = SERIAL) -> Issued:
    ca = ca or a.cloud.pki.factory_ca  # registered with just-in-time registration
    stem = f"{serial}-{sha256_fingerprint(ca.certificate)[:8]}-{len(list(a.directory.iterdir()))}"
    return a.cloud.pki.device(serial, ca=ca).write(a.directory / stem, serial)


def _alive(wire: RawClient) -> bool:
    """True if the session still answers a PINGREQ."""
    try:
        wire.send(mqtt5.PingReqPacket())
        return isinstance(wire.recv(timeout=5), mqtt5.PingRespPacket)
    except (OSError, ssl.SSLError):
        return False


def jit_takeover_console_device(a: Attack) -> Observation:
    victim = a.connected()  # a console device, bound to the device CA
    try:
        seen = a.attempt(_factory_device(a))  # the JIT factory CA vouches for the same serial
        kept = _alive(victim)
    finally:
        victim.close()
    words = seen.detail + ("; the genuine session stayed" if kept else "; the VICTIM WAS KICKED")
    return Observation(seen.kind if kept else "victim-kicked", words, seen.code)


def _connects(a: Attack, identity: Issued) -> Observation:
    """Handshake + CONNECT that is expected to succeed; the session is closed again."""
    wire = RawClient(a.cloud.port, a.context(identity))
    try:
        wire.send(mqtt5.ConnectPacket(SERIAL, clean_start=True))
        kind, words = describe(wire.recv())
        wire.send(mqtt5.DisconnectPacket())
    finally:
        wire.close()
    return Observation(kind, words, logged_code(a.caplog, a.codes))


def jit_other_factory(a: Attack) -> Observation:
    first = _connects(a, _factory_device(a))
    assert first.kind == "connack:0x00", first.detail
    other = a.cloud.pki.root.create_issuing_ca(common_name="Second Factory", role=Role.FACTORY)
    a.cloud.registry.register_ca(
        other.certificate, role=CARole.FACTORY, allow_auto_registration=True, actor=ACTOR
    )
    _apply_feed(a)  # the TLS layer now trusts the second factory CA too
    return a.attempt(_factory_device(a, other))


def renewal_same_ca(a: Attack) -> Observation:
    first = _connects(a, _factory_device(a))
    assert first.kind == "connack:0x00", first.detail
    return _connects(a, _factory_device(a))  # a new certificate from the same factory CA


def _publish_crl(a: Attack, issuer: str, crl: x509.CertificateRevocationList) -> None:
    """Upload a CRL through the admin API's operation, then let the feed act on it."""
    operations = AdminOperations(
        a.cloud.registry, root_certificate=a.cloud.pki.root.certificate, online_ca=None
    )
    operations.publish_crl(issuer, crl.public_bytes(Encoding.PEM), actor=ACTOR)
    _apply_feed(a)


def _live_then(a: Attack, identity: Issued, act: Callable[[], None]) -> Observation:
    """Connect ``identity``, do ``act``, then see the live session end and a reconnect fail."""
    wire = RawClient(a.cloud.port, a.context(identity))
    try:
        wire.send(mqtt5.ConnectPacket(SERIAL, clean_start=True))
        assert wire.recv().reason_code == mqtt5.ConnAckReasonCode.SUCCESS
        act()
        packets = wire.wait_closed(timeout=5)
    finally:
        wire.close()
    live = describe(packets[0] if packets else None)[1]
    seen = a.attempt(identity)
    return Observation(seen.kind, f"live session: {live}; reconnect: {seen.detail}", seen.code)


def crl_listed_device(a: Attack) -> Observation:
    identity = _factory_device(a)
    ca = a.cloud.pki.factory_ca
    crl = ca.build_crl([RevokedEntry(identity.certificate.serial_number, NOW)])
    return _live_then(a, identity, lambda: _publish_crl(a, a.cloud.fingerprint(ca), crl))


def root_crl_listed_ca(a: Attack) -> Observation:
    identity = _factory_device(a)
    ca = a.cloud.pki.factory_ca
    crl = a.cloud.pki.root.build_crl([RevokedEntry(ca.certificate.serial_number, NOW)])
    return _live_then(a, identity, lambda: _publish_crl(a, "root", crl))


_KEY_AGREEMENT_ONLY = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


def _loose(**bent: object) -> Callable[[Attack], Observation]:
    def run(a: Attack) -> Observation:
        stem = "loose-" + "-".join(bent)
        bent_leaf = hostile_leaf(a.cloud.pki.factory_ca, SERIAL, **bent)  # type: ignore[arg-type]
        return a.attempt(bent_leaf.write(a.directory, stem))

    return run


_EMAIL = x509.NameAttribute(NameOID.EMAIL_ADDRESS, "owner@example.com")


def _server_clients(a: Attack, ca: IssuingCA) -> Observation:
    """A server certificate signed by ``ca`` meets the agent, mosquitto_sub and s_client,
    each trusting exactly the file devices pin (``DATA/pinned-ca.pem``)."""
    server = hostile_server(ca).write(a.directory, f"server-from-{ca.role.value}")
    identity = a.cloud.console_device(SERIAL)
    pinned = a.cloud.settings.pinned_ca
    impostor = serving(
        CloudService(
            a.cloud.registry,
            GatewaySettings(
                certificate_chain=server.cert_path,
                private_key=server.key_path,
                port=0,
                connect_timeout=5.0,
            ),
        )
    )
    verdicts: dict[str, str] = {}
    try:
        device = DeviceClient(
            DeviceIdentity.load(identity.cert_path, FileKey(identity.key_path)),
            CloudEndpoint(host="127.0.0.1", port=impostor.port, pinned_ca=pinned),
        )
        try:
            device.connect(10.0)
            device.disconnect()
            verdicts["agent"] = "ACCEPTED"
        except TetherError as exc:
            verdicts["agent"] = f"refused ({exc.code})"
        sub = subprocess.run(
            ["mosquitto_sub", "-V", "5", "-h", "127.0.0.1", "-p", str(impostor.port),
             "--cafile", str(pinned), "--cert", str(identity.cert_path),
             "--key", str(identity.key_path), "-i", SERIAL,
             "-t", f"devices/{SERIAL}/commands/#", "-C", "1", "-W", "3"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        verdicts["mosquitto_sub"] = (
            "ACCEPTED" if sub.returncode == 27 else f"refused ({sub.stderr.strip()[:60]})"
        )
        s_client = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{impostor.port}",
             "-CAfile", str(pinned), "-verify_return_error",
             "-cert", str(identity.cert_path), "-key", str(identity.key_path)],
            input="", capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        verify = re.search(r"Verify return code: (\d+ \([^)]*\))", s_client.stdout)
        verdicts["s_client"] = (
            "ACCEPTED"
            if s_client.returncode == 0
            else f"refused ({verify.group(1) if verify else 'handshake failed'})"
        )
    finally:
        impostor.close()
    refused = all(v.startswith("refused") for v in verdicts.values())
    words = "; ".join(f"{name}: {verdict}" for name, verdict in verdicts.items())
    return Observation(
        "refused-by-all" if refused else "accepted", words, "server_not_trusted" if refused else "-"
    )


def _server_from(role: Role) -> Callable[[Attack], Observation]:
    def run(a: Attack) -> Observation:
        ca = {
            Role.FACTORY: a.cloud.pki.factory_ca,
            Role.DEVICE: a.cloud.pki.device_ca,
            Role.SERVICE: a.cloud.pki.service_ca,
        }[role]
        return _server_clients(a, ca)

    return run


# -- the table -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One attack: its id, what it does, the outcomes allowed and the codes to be logged."""

    id: str
    attack: str
    kinds: frozenset[str]
    codes: frozenset[str]
    run: Callable[[Attack], Observation]
    known_gap: str | None = None  # a finding for the lead: the test is a strict xfail

    @property
    def expectation(self) -> str:
        kinds = " or ".join(sorted(self.kinds))
        return f"{self.attack} -> {kinds}; logs `{'`/`'.join(sorted(self.codes))}`"


def _case(
    id: str,
    attack: str,
    kinds: str,
    codes: str,
    run: Callable[[Attack], Observation],
    known_gap: str | None = None,
) -> Case:
    return Case(
        id, attack, frozenset(kinds.split("|")), frozenset(codes.split("|")), run, known_gap
    )


TLS12 = ssl.TLSVersion.TLSv1_2
CASES: tuple[Case, ...] = (
    _case(
        "tls-no-client-certificate",
        "no client certificate",
        "tls",
        "no_client_certificate",
        no_certificate,
    ),
    _case(
        "tls-self-signed-real-serial",
        "self-signed cert, CN = a real enabled serial",
        "tls",
        "ca_not_registered",
        self_signed,
    ),
    _case(
        "tls-unregistered-ca",
        "cert from a CA under the same root, never registered",
        "tls",
        "ca_not_registered",
        unregistered_ca,
    ),
    _case(
        "tls-deactivated-ca",
        "issuing CA set inactive in the registry",
        "tls",
        "ca_not_registered|ca_inactive",
        deactivated_ca,
    ),
    _case(
        "tls-revoked-issuing-ca",
        "issuing CA revoked by the root (CRL) and in the registry",
        "tls",
        "ca_not_registered|ca_inactive",
        revoked_issuing_ca,
    ),
    _case("tls-expired", "device cert expired yesterday", "tls", "certificate_expired", expired),
    _case(
        "tls-not-yet-valid",
        "device cert valid from tomorrow",
        "tls",
        "certificate_not_yet_valid",
        not_yet_valid,
    ),
    _case(
        "tls-forged-issuer",
        "names the registered CA, signed by a lookalike key",
        "tls",
        "certificate_signature_invalid",
        forged_issuer,
    ),
    _case(
        "tls-server-auth-eku", "EKU serverAuth only", "tls", "profile_violation", server_auth_only
    ),
    _case(
        "tls-ca-true-leaf",
        "CA:TRUE certificate as a client cert",
        "tls|connack:0x86",
        "profile_violation",
        ca_true_leaf,
    ),
    _case(
        "tls-rsa-key",
        "RSA-2048 key, signed by the device CA",
        "tls|connack:0x86",
        "profile_violation",
        rsa_leaf,
    ),
    _case(
        "tls-p384-key",
        "P-384 key, signed by the device CA",
        "tls|connack:0x86",
        "profile_violation",
        p384_leaf,
    ),
    _case(
        "tls-cert-without-its-key",
        "real registered cert, CertificateVerify by another key (awscrt + SoftHSM2)",
        "tls",
        "tls_handshake_failed",
        certificate_without_its_key,
    ),
    _case("tls-1.0", "TLS 1.0 only", "tls", "tls_version_refused", _old_tls(ssl.TLSVersion.TLSv1)),
    _case(
        "tls-1.1", "TLS 1.1 only", "tls", "tls_version_refused", _old_tls(ssl.TLSVersion.TLSv1_1)
    ),
    _case(
        "tls-cbc-only",
        "TLS 1.2 with CBC suites only",
        "tls",
        "tls_no_shared_cipher",
        _ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:AES128-SHA:AES256-SHA256"),
    ),
    _case(
        "tls-rsa-kex-only",
        "TLS 1.2 with RSA key exchange only",
        "tls",
        "tls_no_shared_cipher",
        _ciphers("AES128-GCM-SHA256:AES256-GCM-SHA384"),
    ),
    _case(
        "tls-plaintext-mqtt",
        "plain MQTT CONNECT on the TLS port",
        "closed",
        "tls_version_refused",
        plaintext,
    ),
    _case(
        "reg-revoked", "revoked device certificate", "connack:0x86", "certificate_revoked", revoked
    ),
    _case(
        "reg-disabled-device",
        "device disabled in the registry",
        "connack:0x87",
        "device_disabled",
        disabled,
    ),
    _case(
        "reg-unknown-certificate",
        "unregistered cert of a CA without just-in-time registration",
        "connack:0x87",
        "certificate_unknown",
        unknown_certificate,
    ),
    _case(
        "mqtt-client-id-mismatch",
        "CONNECT with another real device's client id",
        "connack:0x85",
        "mqtt_client_id_mismatch",
        client_id_mismatch,
    ),
    _case(
        "mqtt-publish-other-qos1",
        "QoS 1 PUBLISH to another device's topic",
        "puback:0x87",
        "publish_not_authorized",
        publish_other_qos1,
    ),
    _case(
        "mqtt-publish-other-qos0",
        "QoS 0 PUBLISH to another device's topic",
        "disconnect:0x87",
        "publish_not_authorized",
        publish_other_qos0,
    ),
    _case(
        "mqtt-reply-topic-other-device",
        "QoS 1 PUBLISH whose Response Topic is another device's commands",
        "puback:0x87",
        "response_topic_not_authorized",
        reply_topic_at_another_device,
    ),
    _case(
        "mqtt-publish-sys",
        "QoS 1 PUBLISH to `$SYS/broker/uptime`",
        "puback:0x87",
        "publish_not_authorized",
        publish_sys,
    ),
    _case(
        "mqtt-subscribe-shared",
        "SUBSCRIBE `$share/g/devices/<own serial>/#`",
        "suback:0x9e|suback:0x87",
        "subscribe_not_authorized|mqtt_shared_subscriptions_unsupported",
        subscribe_shared,
    ),
    _case(
        "mqtt-subscribe-other",
        "SUBSCRIBE to another device's commands",
        "suback:0x87",
        "subscribe_not_authorized",
        subscribe_other,
    ),
    _case(
        "mqtt-subscribe-hash",
        "SUBSCRIBE `#`",
        "suback:0x87",
        "subscribe_not_authorized",
        subscribe_everything,
    ),
    _case(
        "mqtt-subscribe-plus",
        "SUBSCRIBE `devices/+/telemetry`",
        "suback:0x87",
        "subscribe_not_authorized",
        subscribe_all_devices,
    ),
    _case(
        "mqtt-subscribe-sys",
        "SUBSCRIBE `$SYS/#`",
        "suback:0x87",
        "subscribe_not_authorized",
        subscribe_sys,
    ),
    _case(
        "mqtt-spoofed-sender",
        "PUBLISH with user property tether-sender=<another device>",
        "attributed",
        "tether-sender rewritten",
        spoofed_sender,
    ),
    _case(
        "mqtt-oversized-packet",
        "PUBLISH header announcing max_packet_size + 1",
        "disconnect:0x95",
        "mqtt_packet_too_large",
        oversized,
    ),
    _case(
        "mqtt-malformed-publish",
        "PUBLISH whose topic length runs past the packet",
        "disconnect:0x81",
        "mqtt_malformed_packet",
        malformed_publish,
    ),
    _case(
        "mqtt-malformed-length",
        "remaining length of 5 bytes",
        "disconnect:0x81",
        "mqtt_malformed_packet",
        malformed_length,
    ),
    _case(
        "mqtt-qos2-other",
        "QoS 2 PUBLISH to another device's topic",
        "pubrec:0x87",
        "publish_not_authorized",
        qos2_publish_other,
    ),
    _case(
        "mqtt-retain",
        "retained PUBLISH where the gateway keeps none (Retain Available 0)",
        "disconnect:0x9a",
        "mqtt_retain_unsupported",
        retained_publish,
    ),
    _case(
        "mqtt-publish-before-connect",
        "PUBLISH as the first packet",
        "closed",
        "mqtt_protocol_error",
        publish_before_connect,
    ),
    _case(
        "mqtt-no-connect",
        "TLS up, then silence (no CONNECT)",
        "closed",
        "mqtt_connect_timeout",
        no_connect,
    ),
    _case(
        "ca-jit-takeover-console-device",
        "JIT factory CA cert for a console device's serial, while the device is connected",
        "connack:0x87",
        "serial_bound_to_other_ca",
        jit_takeover_console_device,
    ),
    _case(
        "ca-jit-other-factory",
        "second JIT factory CA vouches for a serial the first one registered",
        "connack:0x87",
        "serial_bound_to_other_ca",
        jit_other_factory,
    ),
    _case(
        "ca-renewal-same-ca",
        "control: a new certificate from the CA the serial belongs to",
        "connack:0x00",
        "handshake_authorized",
        renewal_same_ca,
    ),
    _case(
        "crl-issuing-ca-lists-device",
        "live JIT device listed on its factory CA's CRL, uploaded through the API operation",
        "connack:0x86",
        "certificate_revoked",
        crl_listed_device,
    ),
    _case(
        "crl-root-lists-issuing-ca",
        "live device under a factory CA listed on the root CRL, uploaded",
        "tls",
        "ca_not_registered|ca_inactive",
        root_crl_listed_ca,
    ),
    _case(
        "profile-no-key-usage",
        "JIT factory CA cert without keyUsage",
        "tls|connack:0x86",
        "profile_violation",
        _loose(key_usage=False),
    ),
    _case(
        "profile-key-agreement-only",
        "JIT factory CA cert with keyUsage keyAgreement only",
        "tls|connack:0x86",
        "profile_violation",
        _loose(key_usage=_KEY_AGREEMENT_ONLY),
    ),
    _case(
        "profile-no-basic-constraints",
        "JIT factory CA cert without basicConstraints",
        "tls|connack:0x86",
        "profile_violation",
        _loose(basic_constraints=False),
    ),
    _case(
        "profile-email-in-subject",
        "JIT factory CA cert with an e-mail address beside the CN",
        "tls|connack:0x86",
        "profile_violation",
        _loose(extra_subject=(_EMAIL,)),
    ),
    _case(
        "profile-email-san",
        "JIT factory CA cert with an rfc822Name subjectAltName",
        "tls|connack:0x86",
        "profile_violation",
        _loose(san=x509.SubjectAlternativeName([x509.RFC822Name("owner@example.com")])),
    ),
    _case(
        "device-server-cert-from-factory-ca",
        "server cert signed by the factory CA: agent, mosquitto_sub, s_client with pinned-ca.pem",
        "refused-by-all",
        "server_not_trusted",
        _server_from(Role.FACTORY),
    ),
    _case(
        "device-server-cert-from-device-ca",
        "server cert signed by the device CA: agent, mosquitto_sub, s_client with pinned-ca.pem",
        "refused-by-all",
        "server_not_trusted",
        _server_from(Role.DEVICE),
    ),
    _case(
        "device-server-cert-from-service-ca",
        "server cert signed by the service CA: agent, mosquitto_sub, s_client with pinned-ca.pem",
        "refused-by-all",
        "server_not_trusted",
        _server_from(Role.SERVICE),
    ),
    _case(
        "device-mitm-other-ca",
        "device meets a server cert from another CA",
        "device:server_not_trusted",
        "server_not_trusted",
        device_mitm,
    ),
    _case(
        "device-wrong-host",
        "device meets a pinned-CA server cert for another name",
        "device:server_not_trusted",
        "server_not_trusted",
        device_wrong_host,
    ),
    _case(
        "device-expired-server",
        "device meets an expired pinned-CA server cert",
        "device:server_not_trusted",
        "server_not_trusted",
        device_expired_server,
    ),
)
