"""Revocation at once: drop_sessions disconnects live sessions; stop closes everything."""

from __future__ import annotations

import time

import mqtt5
from mqtt5 import DisconnectReasonCode

from tests.cloud.gateway.harness import client_context, wait_for_log
from tests.cloud.gateway.pki import DEVICE_SERIAL, OTHER_SERIAL, SERVICE_NAME
from tests.support.mqtt import RawClient, paho_connect
from tether.cloud.gateway import Identity, IdentityKind, certificate_fingerprint


def test_revoke_and_drop_disconnects_a_live_paho_client_at_once(gateway, pki, caplog):
    device = paho_connect(gateway.port, pki.root.cert_path, pki.device, DEVICE_SERIAL)
    bystander = paho_connect(gateway.port, pki.root.cert_path, pki.other_device, OTHER_SERIAL)
    try:
        assert {i.name for i in gateway.gateway.sessions()} == {DEVICE_SERIAL, OTHER_SERIAL}
        fingerprint = certificate_fingerprint(pki.device.certificate)
        gateway.sync(lambda: gateway.authority.revoke(fingerprint))
        started = time.monotonic()
        dropped = gateway.call(
            gateway.gateway.drop_sessions(
                lambda identity: identity.certificate_fingerprint == fingerprint,
                reason="certificate revoked",
            )
        )
        reason = device.disconnects.get(timeout=5)
        assert time.monotonic() - started < 2
        assert dropped == 1
        assert reason.value == DisconnectReasonCode.ADMINISTRATIVE_ACTION
        assert [i.name for i in gateway.gateway.sessions()] == [OTHER_SERIAL]
        assert bystander.disconnects.empty()
        record = wait_for_log(caplog, "session_dropped")
        assert record.identity == DEVICE_SERIAL
        # paho reconnects by itself: the next handshake is refused by the authority.
        assert wait_for_log(caplog, "certificate_revoked").levelname == "WARNING"
    finally:
        device.stop()
        bystander.stop()


def test_drop_reaches_a_connection_that_has_not_sent_connect(gateway, pki, caplog):
    client = RawClient(gateway.port, client_context(pki, pki.device))
    try:
        wait_for_log(caplog, "handshake_authorized")
        dropped = gateway.call(
            gateway.gateway.drop_sessions(lambda i: i.name == DEVICE_SERIAL, reason="disabled")
        )
        assert dropped == 1
        assert client.wait_closed(timeout=5) == []
    finally:
        client.close()


def test_drop_with_a_predicate_matching_nobody_changes_nothing(gateway, pki):
    client = RawClient(gateway.port, client_context(pki, pki.service))
    try:
        assert client.connect(SERVICE_NAME).reason_code == 0
        dropped = gateway.call(
            gateway.gateway.drop_sessions(lambda i: i.kind is IdentityKind.DEVICE, reason="x")
        )
        assert dropped == 0
        client.send(mqtt5.PingReqPacket())
        assert isinstance(client.recv(), mqtt5.PingRespPacket)
        assert gateway.gateway.sessions() == [
            Identity(
                kind=IdentityKind.SERVICE,
                name=SERVICE_NAME,
                certificate_fingerprint=certificate_fingerprint(pki.service.certificate),
                issuer=pki.service_ca.certificate.subject.rfc4514_string(),
                issuer_fingerprint=certificate_fingerprint(pki.service_ca.certificate),
            )
        ]
    finally:
        client.close()


def test_stop_disconnects_every_session_with_server_shutting_down(gateway_factory, pki):
    running = gateway_factory()
    client = RawClient(running.port, client_context(pki, pki.device))
    try:
        assert client.connect(DEVICE_SERIAL).reason_code == 0
        running.close()
        seen = client.wait_closed(timeout=5)
    finally:
        client.close()
    assert [p.reason_code for p in seen] == [DisconnectReasonCode.SERVER_SHUTTING_DOWN]
