"""The gateway process's /metrics, /healthz and /readyz, against a real cloud on loopback.

Real TLS handshakes from raw MQTT 5 clients: good devices, a revoked one (refused by the
verdict) and one under an unregistered CA (refused in TLS), then a live revocation. Every
number asserted is an exact count of what the test did; no timing is asserted.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from mqtt5 import ConnAckReasonCode

from tests.cloud.conftest import ACTOR, Cloud
from tests.cloud.observability.scrape import get, promtool_check, value, wait_for_sample
from tests.support.mqtt import RawClient
from tether.cloud.observability.endpoints import GatewayEndpoints
from tether.pki import sha256_fingerprint


@pytest.fixture
def endpoints(cloud: Cloud) -> Iterator[int]:
    served = GatewayEndpoints(cloud.service, host="127.0.0.1", port=0, feed_max_lag=5.0)
    port = cloud.running.call(served.start())
    try:
        yield port
    finally:
        cloud.running.call(served.stop())


def test_counts_sessions_and_handshakes_by_reason(
    cloud: Cloud, endpoints: int, tmp_path: Path
) -> None:
    good = [cloud.console_device(f"MET-{n}") for n in range(2)]
    revoked = cloud.console_device("MET-REVOKED")
    cloud.registry.revoke_certificate(
        sha256_fingerprint(revoked.certificate), reason=x509.ReasonFlags.superseded, actor=ACTOR
    )
    stranger = cloud.pki.device("MET-STRANGER", ca=cloud.pki.stranger_ca).write(
        tmp_path, "MET-STRANGER"
    )

    clients = [RawClient(cloud.port, cloud.tls_context(identity)) for identity in good]
    try:
        for n, client in enumerate(clients):
            assert client.connect(f"MET-{n}").reason_code == ConnAckReasonCode.SUCCESS
        connack = cloud.connack(revoked, "MET-REVOKED")
        assert connack is not None and connack.reason_str == "certificate_revoked"
        # Refused in TLS (the alert may reach the client as a reset: refused all the same).
        with contextlib.suppress(OSError):
            assert cloud.connack(stranger, "MET-STRANGER") is None

        text = wait_for_sample(
            endpoints,
            "tether_gateway_handshakes_total",
            lambda v: v == 1,
            result="refused",
            code="ca_not_registered",
        )
        assert value(text, "tether_gateway_sessions") == 2
        assert (
            value(text, "tether_gateway_handshakes_total", result="accepted", code="mqtt_connected")
            == 2
        )
        assert (
            value(
                text,
                "tether_gateway_handshakes_total",
                result="refused",
                code="certificate_revoked",
            )
            == 1
        )
        assert value(text, "tether_gateway_handshake_duration_seconds_count") == 4
        assert value(text, "tether_gateway_limit_reached_total", code="connection_cap_reached") == 0

        # A live revocation: counted, its session dropped, the time to drop observed once.
        cloud.registry.revoke_certificate(
            sha256_fingerprint(good[0].certificate),
            reason=x509.ReasonFlags.key_compromise,
            actor=ACTOR,
        )
        text = wait_for_sample(
            endpoints,
            "tether_revocation_sessions_dropped_total",
            lambda v: v == 1,
            code="certificate_revoked",
        )
        assert value(text, "tether_gateway_sessions") == 1
        assert value(text, "tether_revocation_drop_duration_seconds_count") == 1
        # Both revocations ended an identity; only the live one had a session to drop.
        assert value(text, "tether_revocations_total", code="certificate_revoked") == 2
        assert (value(text, "tether_feed_lag_seconds") or 0) >= 0

        checked = promtool_check(text)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        for client in clients:
            client.close()


def test_messages_in_and_out_are_counted(cloud: Cloud, endpoints: int) -> None:
    import mqtt5

    service = cloud.service_identity("met-service")
    device = cloud.console_device("MET-PUB")
    listener = RawClient(cloud.port, cloud.tls_context(service))
    talker = RawClient(cloud.port, cloud.tls_context(device))
    try:
        assert listener.connect("met-service").reason_code == ConnAckReasonCode.SUCCESS
        listener.send(mqtt5.SubscribePacket(1, [mqtt5.TopicFilter("devices/+/telemetry")]))
        assert isinstance(listener.recv(), mqtt5.SubAckPacket)
        assert talker.connect("MET-PUB").reason_code == ConnAckReasonCode.SUCCESS
        for _ in range(3):
            talker.send(mqtt5.PublishPacket("devices/MET-PUB/telemetry", b"{}"))
        for _ in range(3):
            assert isinstance(listener.recv(), mqtt5.PublishPacket)
        text = wait_for_sample(
            endpoints, "tether_gateway_messages_received_total", lambda v: v == 3
        )
        assert value(text, "tether_gateway_messages_delivered_total") == 3
        assert value(text, "tether_gateway_messages_dropped_total") == 0
    finally:
        listener.close()
        talker.close()


def test_health_and_readiness(cloud: Cloud, endpoints: int) -> None:
    assert get(endpoints, "/healthz")[:2] == (200, "application/json")
    status, _, body = get(endpoints, "/readyz")
    answer = json.loads(body)
    assert status == 200 and answer["ready"] is True, answer
    assert set(answer["checks"]) == {"registry", "change_feed", "gateway"}
    assert all(check["ok"] for check in answer["checks"].values())
    assert get(endpoints, "/readyz", method="HEAD")[0] == 200


def test_not_ready_when_the_feed_is_behind(cloud: Cloud) -> None:
    # A feed allowed no lag at all is always "behind": the check and the 503 are real.
    strict = GatewayEndpoints(cloud.service, host="127.0.0.1", port=0, feed_max_lag=0.0)
    port = cloud.running.call(strict.start())
    try:
        status, _, body = get(port, "/readyz")
        answer = json.loads(body)
        assert status == 503 and answer["ready"] is False
        assert answer["checks"]["change_feed"]["ok"] is False
        assert answer["checks"]["registry"]["ok"] is True
    finally:
        cloud.running.call(strict.stop())


def test_refuses_what_it_does_not_serve(endpoints: int) -> None:
    assert get(endpoints, "/nothing")[0] == 404
    assert get(endpoints, "/metrics", method="POST")[0] == 405


def test_a_taken_port_is_a_clear_error(cloud: Cloud, endpoints: int) -> None:
    from tether.errors import ConfigurationError

    clash = GatewayEndpoints(cloud.service, host="127.0.0.1", port=endpoints, feed_max_lag=5.0)
    with pytest.raises(ConfigurationError) as refused:
        cloud.running.call(clash.start())
    assert refused.value.code == "metrics_bind_failed"
