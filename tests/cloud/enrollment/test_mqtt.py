"""Enrollment over MQTT 5 on a running cloud: ``$tether/enroll`` and ``$tether/renew`` with
Response Topic and Correlation Data, answered without a subscription; claims enroll only."""

from __future__ import annotations

import json
import queue
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.cloud.conftest import ACTOR, TIMEOUT
from tests.cloud.enrollment.conftest import Enrolling, csr_pem
from tests.support.mqtt import PahoClient
from tests.support.pki import Issued
from tether.pki import generate_key


def ask(client: PahoClient, topic: str, request: dict[str, Any], tag: bytes) -> dict[str, Any]:
    """Publish a request with Response Topic + Correlation Data; the reply, unsubscribed."""
    properties = Properties(PacketTypes.PUBLISH)
    properties.ResponseTopic = "$tether/reply/" + tag.decode()
    properties.CorrelationData = tag
    client.client.publish(topic, json.dumps(request), qos=1, properties=properties)
    try:
        message = client.messages.get(timeout=TIMEOUT)
    except queue.Empty:
        raise AssertionError(f"no reply on {topic}") from None
    assert message.topic == "$tether/reply/" + tag.decode()
    assert message.properties.CorrelationData == tag
    return json.loads(message.payload)  # type: ignore[no-any-return]


def close(client: PahoClient) -> None:
    client.client.disconnect()
    client.client.loop_stop()


def test_factory_unit_enrolls_over_mqtt_renews_and_rotates(enrolling: Enrolling) -> None:
    cloud = enrolling.cloud
    key = generate_key()
    birth_cert = cloud.pki.factory_ca.issue_device_certificate_for_key(key.public_key(), "mq-1")
    birth = Issued(birth_cert, key).write(cloud.files, "mq-1-birth")
    client = cloud.paho(birth, "mq-1")
    request = {"csr": csr_pem(key, "mq-1").decode()}
    answer = ask(client, "$tether/enroll", request, b"c1")
    assert answer["result"] == "enrolled" and answer["serial"] == "mq-1"
    # The serial moved to the operational CA: the birth session ends. Within the overlap the
    # birth certificate still connects, enroll-only, so a lost reply can be asked for again.
    client.disconnects.get(timeout=TIMEOUT)
    close(client)
    client = cloud.paho(birth, "mq-1")
    again = ask(client, "$tether/enroll", request, b"c2")
    assert again["certificate"] == answer["certificate"] and again["replayed"] is True
    other = ask(client, "$tether/enroll", {"csr": csr_pem(generate_key(), "mq-1").decode()}, b"c3")
    assert other["code"] == "serial_already_enrolled"
    close(client)
    operational = Issued(x509.load_pem_x509_certificate(answer["certificate"].encode()), key).write(
        cloud.files, "mq-1-op"
    )
    client = cloud.paho(operational, "mq-1")
    renewed = ask(client, "$tether/renew", {"csr": csr_pem(key, None).decode()}, b"r1")
    assert renewed["result"] == "renewed"
    new_key = generate_key()
    rotated = ask(client, "$tether/renew", {"csr": csr_pem(new_key, None).decode()}, b"r2")
    assert rotated["result"] == "rotated"
    close(client)
    rotated_identity = Issued(
        x509.load_pem_x509_certificate(rotated["certificate"].encode()), new_key
    ).write(cloud.files, "mq-1-rot")
    close(cloud.paho(rotated_identity, "mq-1"))
    assert cloud.registry.get_device("mq-1").ca_fingerprint == cloud.fingerprint(
        cloud.pki.device_ca
    )


def test_claim_may_only_enroll(enrolling: Enrolling, caplog: pytest.LogCaptureFixture) -> None:
    cloud = enrolling.cloud
    bundle = enrolling.admin.create_claim("line-3", serials=["l3-1"], actor=ACTOR)
    assert bundle.private_key_pem is not None
    claim_key = load_pem_private_key(bundle.private_key_pem.encode(), None)
    claim = Issued(
        x509.load_pem_x509_certificate(bundle.certificate_pem.encode()), claim_key
    ).write(cloud.files, "claim-line-3")
    client = cloud.paho(claim, "claim.line-3")
    info = client.client.publish("devices/claim.line-3/telemetry", b"{}", qos=1)
    info.wait_for_publish(TIMEOUT)
    outside = ask(client, "$tether/enroll", {"csr": csr_pem(generate_key(), "l3-9").decode()}, b"o")
    assert (outside["result"], outside["code"]) == ("refused", "claim_policy_refused")
    device_key = generate_key()
    inside = ask(client, "$tether/enroll", {"csr": csr_pem(device_key, "l3-1").decode()}, b"i")
    assert inside["result"] == "enrolled"
    renew = ask(client, "$tether/renew", {"csr": csr_pem(device_key, None).decode()}, b"n")
    assert renew["code"] == "enrollment_not_allowed"
    close(client)
    # The claim's telemetry was refused by the topic policy (PUBACK 0x87).
    assert any(
        "publish_not_authorized" in r.getMessage() and "claim.line-3" in r.getMessage()
        for r in caplog.records
    )
    assert cloud.registry.list_certificates(device_serial="l3-1").total == 1


def test_malformed_request_gets_a_clear_refusal(enrolling: Enrolling) -> None:
    cloud = enrolling.cloud
    key = generate_key()
    birth_cert = cloud.pki.factory_ca.issue_device_certificate_for_key(key.public_key(), "mq-2")
    client = cloud.paho(Issued(birth_cert, key).write(cloud.files, "mq-2"), "mq-2")
    bad = ask(client, "$tether/enroll", {"nope": 1}, b"b1")
    assert bad["code"] == "enrollment_bad_request"
    garbage = ask(client, "$tether/enroll", {"csr": "not a csr"}, b"b2")
    assert garbage["code"] == "pki_malformed_input"
    close(client)


def test_renew_now_is_pushed_to_a_connected_device(enrolling: Enrolling) -> None:
    cloud = enrolling.cloud
    issued = cloud.console_device("push-1")  # a device CA (operational) certificate
    client = cloud.paho(issued, "push-1")
    client.client.subscribe("devices/push-1/tether/renew-now", qos=1)
    client.subacks.get(timeout=TIMEOUT)
    enrolling.admin.request_renewal("push-1", actor=ACTOR)
    message = client.messages.get(timeout=TIMEOUT)
    assert message.topic == "devices/push-1/tether/renew-now"
    renewed = ask(client, "$tether/renew", {"csr": csr_pem(issued.key, None).decode()}, b"p")
    assert renewed["result"] == "renewed"
    close(client)
