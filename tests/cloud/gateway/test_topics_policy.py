"""Topic syntax, matching, and the default policy (pure functions, plus properties)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.cloud.gateway import DefaultPolicy, Identity, IdentityKind
from tether.cloud.gateway.broker import Broker, Message, Subscription, attributed_properties
from tether.cloud.gateway.topics import is_valid_topic_filter, is_valid_topic_name, matches

DEVICE = Identity(IdentityKind.DEVICE, "SN0001", "00" * 32, "CN=Device CA")
SERVICE = Identity(IdentityKind.SERVICE, "ingest", "11" * 32, "CN=Service CA")
POLICY = DefaultPolicy()


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "a/b", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("a/+/c", "a//c", True),
        ("a/b", "a/b/c", False),
    ],
)
def test_matching(topic_filter, topic, expected):
    assert matches(topic_filter, topic) is expected


@pytest.mark.parametrize("topic_filter", ["", "a/#/b", "a+/b", "a/b#", "x\x00y"])
def test_invalid_filters(topic_filter):
    assert not is_valid_topic_filter(topic_filter)


@pytest.mark.parametrize("topic", ["", "a/+", "a/#", "a\x00"])
def test_invalid_topic_names(topic):
    assert not is_valid_topic_name(topic)


@pytest.mark.parametrize(
    ("identity", "topic", "allowed"),
    [
        (DEVICE, "devices/SN0001/telemetry", True),
        (DEVICE, "devices/SN0001/a/b", True),
        (DEVICE, "devices/SN0001", False),
        (DEVICE, "devices/SN0002/telemetry", False),
        (DEVICE, "devices/SN00011/telemetry", False),
        (DEVICE, "other/SN0001/telemetry", False),
        (DEVICE, "$SYS/x", False),
        (SERVICE, "devices/SN0001/commands/reboot", True),
        (SERVICE, "devices/SN0001/commands", False),
        (SERVICE, "devices/SN0001/telemetry", False),
        (SERVICE, "services/ingest/x", False),
    ],
)
def test_publish_policy(identity, topic, allowed):
    assert POLICY.may_publish(identity, topic) is allowed


@pytest.mark.parametrize(
    ("identity", "topic_filter", "allowed"),
    [
        (DEVICE, "devices/SN0001/#", True),
        (DEVICE, "devices/SN0001/+/state", True),
        (DEVICE, "devices/+/telemetry", False),
        (DEVICE, "devices/#", False),
        (DEVICE, "#", False),
        (DEVICE, "+/SN0001/x", False),
        (DEVICE, "devices/SN0002/#", False),
        (DEVICE, "$share/g/devices/SN0001/x", False),
        (SERVICE, "devices/+/telemetry", True),
        (SERVICE, "devices/#", True),
        (SERVICE, "#", False),
        (SERVICE, "+/x", False),
        (SERVICE, "devices", False),
    ],
)
def test_subscribe_policy(identity, topic_filter, allowed):
    assert POLICY.may_subscribe(identity, topic_filter) is allowed


def test_an_identity_name_with_topic_characters_gets_nothing():
    sneaky = Identity(IdentityKind.DEVICE, "SN1/+", "22" * 32, "CN=x")
    assert not POLICY.may_publish(sneaky, "devices/SN1/+/x")
    assert not POLICY.may_subscribe(sneaky, "devices/SN1/#")


levels = st.text(alphabet="abcSN01+#/$", min_size=1, max_size=30)


@given(levels)
def test_a_device_can_never_subscribe_to_a_filter_that_matches_another_devices_topic(pattern):
    if POLICY.may_subscribe(DEVICE, pattern):
        assert not matches(pattern, "devices/SN0002/telemetry")
        assert not matches(pattern, "devices/SN0001x/telemetry")
        assert pattern.startswith("devices/SN0001/")


@given(levels)
def test_what_a_device_may_publish_lies_in_its_subtree(topic):
    if POLICY.may_publish(DEVICE, topic):
        assert matches("devices/SN0001/#", topic)


class Collector:
    def __init__(self) -> None:
        self.received: list[tuple[Message, int]] = []

    def deliver(self, message: Message, qos: int) -> bool:
        self.received.append((message, qos))
        return True


def test_broker_delivers_once_at_the_best_granted_qos_and_honours_no_local():
    broker = Broker()
    a, b = Collector(), Collector()
    broker.subscribe(a, Subscription("devices/+/telemetry", 0))
    broker.subscribe(a, Subscription("devices/#", 1))
    broker.subscribe(b, Subscription("devices/SN0001/#", 1, no_local=True))
    message = Message(
        "devices/SN0001/telemetry",
        b"x",
        1,
        DEVICE,
        attributed_properties(DEVICE, [("tether-sender", "forged"), ("k", "v")]),
    )
    assert broker.publish(message, origin=b) == 1
    assert [qos for _, qos in a.received] == [1]
    assert b.received == []
    assert message.user_properties == (("k", "v"), ("tether-sender", "SN0001"))
    assert broker.unsubscribe(a, "devices/#") is True
    assert broker.unsubscribe(a, "devices/#") is False
    broker.remove(a)
    assert broker.subscription_count() == 1


@pytest.mark.parametrize(
    ("identity", "response_topic", "allowed"),
    [
        (DEVICE, "devices/SN0001/replies/1", True),
        (DEVICE, "devices/SN0002/commands/unlock", False),
        (DEVICE, "devices/+/x", False),
        (DEVICE, "services/ingest/replies", False),
        (SERVICE, "devices/SN0001/replies", True),
        (SERVICE, "devices/#", False),
    ],
)
def test_response_topics_follow_the_senders_publish_rights(identity, response_topic, allowed):
    assert POLICY.may_request_reply(identity, response_topic) is allowed
