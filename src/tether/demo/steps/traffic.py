"""Steps 6 and 7: both devices connect, then telemetry goes up and a command comes down."""

from __future__ import annotations

from tether.cloud.registry import Provisioning
from tether.demo.peers import ServiceClient
from tether.demo.state import DemoState
from tether.demo.steps.common import (
    ACTOR,
    CONSOLE_SERIAL,
    FACTORY_SERIAL,
    SERVICE_NAME,
    Outcome,
    write,
    write_key,
)
from tether.device import DeviceClient
from tether.device.explain import explain_steps
from tether.device.preflight import probe_server
from tether.pki import Role, generate_key, sha256_fingerprint
from tether.pki.store import pem


def devices_connect(state: DemoState) -> Outcome:
    """Both devices connect; the factory one with the five handshake steps explained."""
    timeout = state.options.timeout
    endpoint = state.endpoint()
    identity = state.identity(FACTORY_SERIAL)
    server = probe_server(identity, endpoint, timeout)
    server.require_trusted(endpoint)
    first = DeviceClient(identity, endpoint)
    state.clients[FACTORY_SERIAL] = first
    verdict = first.connect(timeout)
    assert first.key_facts is not None
    steps = explain_steps(identity, endpoint, server, first.key_facts, verdict)
    facts = {step.number: step.facts for step in steps}
    second = DeviceClient(state.identity(CONSOLE_SERIAL), state.console_endpoint())
    state.clients[CONSOLE_SERIAL] = second
    verdict2 = second.connect(timeout)
    connected = {i.name for i in state.cloud.sessions()}
    jit = state.registry.get_device(FACTORY_SERIAL).provisioning
    passed = (
        verdict.reason_code == 0
        and verdict2.reason_code == 0
        and {FACTORY_SERIAL, CONSOLE_SERIAL} <= connected
        and jit == Provisioning.JIT
    )
    return Outcome(
        f"CONNACK {verdict.reason_name} for both; {FACTORY_SERIAL} registered just in time",
        passed,
        (
            f"(1) server {facts[1].get('server subject', '?')} chains to the pinned "
            f"{facts[1]['pinned CA']}: {facts[1]['verdict']}",
            f"(2) device presents {facts[2]['subject']} issued by {facts[2]['issuer']}",
            f"(3) {facts[3]['handshake signature']}",
            f"(4) registry: CA registered, certificate unknown -> registered just in time "
            f"({jit}); CONNACK {facts[4]['CONNACK reason code']}",
            f"(5) {facts[5]['TLS version']} {facts[5]['cipher']}",
            f"{CONSOLE_SERIAL} (its three files from the console): CONNACK {verdict2.reason_name}",
        ),
    )


def message_and_command(state: DemoState) -> Outcome:
    """Telemetry reaches a service attributed by the gateway; a command reaches the device."""
    service_ca = state.ca(Role.SERVICE)
    private = generate_key()
    certificate = service_ca.issue_service_certificate(private.public_key(), name=SERVICE_NAME)
    key_path = write_key(state.ws / "service" / "service.key.pem", private)
    certificate_path = write(state.ws / "service" / "service.crt.pem", pem(certificate))
    state.registry.add_device(SERVICE_NAME, provisioning=Provisioning.CONSOLE, actor=ACTOR)
    state.registry.add_certificate(
        certificate,
        device_serial=SERVICE_NAME,
        issuer_fingerprint=sha256_fingerprint(service_ca.certificate),
        actor=ACTOR,
    )
    service = ServiceClient(
        SERVICE_NAME,
        certificate=certificate_path,
        key=key_path,
        pinned_ca=state.settings.pinned_ca,
    )
    state.service = service
    timeout = state.options.timeout
    service.connect("127.0.0.1", state.cloud.port, timeout)
    service.subscribe("devices/+/telemetry", timeout)
    device = state.client(FACTORY_SERIAL)
    telemetry = f"devices/{FACTORY_SERIAL}/telemetry"
    device.publish(telemetry, b'{"temp_c": 21.5}', qos=1, timeout=timeout)
    received = service.receive(timeout)
    sender = dict(received.user_properties).get("tether-sender")
    command = f"devices/{FACTORY_SERIAL}/commands/reboot"
    device.subscribe(f"devices/{FACTORY_SERIAL}/commands/#", qos=1, timeout=timeout)
    service.publish(command, b'{"delay_s": 5}', timeout)
    delivered = device.receive(timeout)
    passed = (
        received.topic == telemetry
        and sender == FACTORY_SERIAL
        and delivered.topic == command
        and delivered.payload == b'{"delay_s": 5}'
    )
    return Outcome(
        f"service got the telemetry with tether-sender={sender}; device got the command",
        passed,
        (
            f"{SERVICE_NAME} (paho, service certificate) <- {received.topic} "
            f"{received.payload.decode()}  tether-sender={sender} (set by the gateway "
            "from the certificate, not by the client)",
            f"{FACTORY_SERIAL} <- {delivered.topic} {delivered.payload.decode()} "
            f"(published by {SERVICE_NAME})",
        ),
    )
