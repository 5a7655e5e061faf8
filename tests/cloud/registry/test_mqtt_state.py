"""The registry-backed MQTT stores: retained messages and persistent sessions (issue 17).

Real SQLite files; "survives a restart" is a reopen of the file, "shared by workers" two
registries open on the same file at once.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tether.cloud.gateway.stores import (
    StoredMessage,
    StoredOutgoing,
    StoredSubscription,
    StoreLimits,
    StoreOutcome,
)
from tether.cloud.registry import Registry
from tether.cloud.registry.mqtt_state import RegistryMqttState, literal_prefix


def message(topic: str, payload: bytes = b"x", sender: str = "SN1", kind: str = "device"):
    return StoredMessage(topic, payload, 1, kind, sender, (("tether-sender", sender),))


@pytest.fixture
def state(registry: Registry) -> RegistryMqttState:
    return RegistryMqttState.on(
        registry,
        StoreLimits(
            max_retained_per_identity=3,
            max_retained_bytes_per_identity=200,
            max_queued_per_session=3,
            max_queued_bytes_per_session=200,
            max_session_expiry=3600,
        ),
    )


def test_retained_set_replace_clear(state):
    assert state.set_retained(message("devices/SN1/status", b"on")) is StoreOutcome.STORED
    assert state.set_retained(message("devices/SN1/status", b"off")) is StoreOutcome.STORED
    assert [m.payload for m in state.retained_matching("devices/+/status", 10)] == [b"off"]
    assert state.set_retained(message("devices/SN1/status", b"")) is StoreOutcome.CLEARED
    assert state.retained_matching("devices/#", 10) == []


def test_retained_matching_follows_the_filter_grammar(state):
    for topic in ("a", "a/b", "a/b/c", "ab", "$SYS/x"):
        state.set_retained(message(topic, sender=topic.replace("/", "-").replace("$", "S")))
    assert {m.topic for m in state.retained_matching("a/#", 10)} == {"a", "a/b", "a/b/c"}
    assert {m.topic for m in state.retained_matching("a/+", 10)} == {"a/b"}
    assert {m.topic for m in state.retained_matching("#", 10)} == {"a", "a/b", "a/b/c", "ab"}
    assert len(state.retained_matching("#", 2)) == 2
    got = state.retained_matching("a/b", 1)[0]
    assert got.user_properties == (("tether-sender", "a-b"),)


def test_retained_bounds_per_identity_refuse_and_keep_what_is_stored(state):
    for number in range(3):
        assert state.set_retained(message(f"devices/SN1/{number}")) is StoreOutcome.STORED
    assert state.set_retained(message("devices/SN1/3")) is StoreOutcome.OVER_COUNT
    # Replacing one of its own is not a new message; another identity has its own bound.
    assert state.set_retained(message("devices/SN1/0", b"y")) is StoreOutcome.STORED
    assert state.set_retained(message("devices/SN2/0", sender="SN2")) is StoreOutcome.STORED
    assert state.set_retained(message("devices/SN2/1", b"z" * 200, "SN2")) is (
        StoreOutcome.OVER_BYTES
    )
    assert len(state.retained_matching("devices/SN1/#", 10)) == 3


def test_state_survives_a_restart_and_is_shared_by_workers(db_url, state):
    state.set_retained(message("devices/SN1/status", b"on"))
    state.save_session("device", "SN1", 600, [StoredSubscription("devices/SN1/commands/#", 1)])
    assert state.enqueue("device", "SN1", message("devices/SN1/commands/a")) is StoreOutcome.STORED
    with Registry.open(db_url) as other:  # a second worker (or the gateway after a restart)
        seen = RegistryMqttState.on(other)
        assert [m.payload for m in seen.retained_matching("devices/#", 10)] == [b"on"]
        stored = seen.load_session("device", "SN1")
        assert stored is not None
        assert stored.subscriptions == (StoredSubscription("devices/SN1/commands/#", 1),)
        assert [m.topic for m in seen.take_queued("device", "SN1", 10)] == [
            "devices/SN1/commands/a"
        ]
    assert state.take_queued("device", "SN1", 10) == []  # taken once, by one worker


def test_session_queue_is_bounded_and_refuses_the_newest(state):
    assert state.enqueue("device", "SN1", message("t")) is StoreOutcome.NO_SESSION
    state.save_session("device", "SN1", 600, [])
    for number in range(3):
        assert state.enqueue("device", "SN1", message(f"t/{number}")) is StoreOutcome.STORED
    assert state.enqueue("device", "SN1", message("t/3")) is StoreOutcome.OVER_COUNT
    assert [m.topic for m in state.take_queued("device", "SN1", 2)] == ["t/0", "t/1"]
    assert state.enqueue("device", "SN1", message("t/4", b"z" * 200)) is StoreOutcome.OVER_BYTES
    assert [m.topic for m in state.take_queued("device", "SN1", 10)] == ["t/2"]


def test_sessions_expire_are_capped_and_deleted_with_their_queue(state, registry):
    saved = state.save_session("service", "ingest", 10**9, [])
    assert saved.expires_at - registry._clock() <= timedelta(seconds=3600)
    state.enqueue("service", "ingest", message("t"))
    assert state.delete_session("service", "ingest") is True
    assert state.load_session("service", "ingest") is None
    assert state.take_queued("service", "ingest", 10) == []
    state.save_session("device", "SN1", 0, [])
    assert state.load_session("device", "SN1") is None  # expired at once: deleted
    assert state.delete_session("device", "SN1") is False


@pytest.mark.parametrize(
    ("topic_filter", "prefix"),
    [("a/b/+", "a/b"), ("a/#", "a"), ("#", ""), ("+/x", ""), ("a/b", "a/b")],
)
def test_literal_prefix(topic_filter, prefix):
    assert literal_prefix(topic_filter) == prefix


def test_what_a_session_owes_its_client_is_kept_and_old_rows_still_read(state, registry):
    owed = (StoredOutgoing(3, message("devices/SN1/commands/a", b"\x00\xff")),
            StoredOutgoing(4, None))  # fmt: skip
    state.save_session("device", "SN1", 600, [], [9], owed)
    loaded = state.load_session("device", "SN1")
    assert loaded is not None
    assert (loaded.qos2_received, loaded.outgoing) == ((9,), owed)
    state.save_session("device", "SN1", 600, [], [9])  # nothing owed: the 0007 list form
    loaded = state.load_session("device", "SN1")
    assert loaded is not None and (loaded.qos2_received, loaded.outgoing) == ((9,), ())


def test_message_expiry_is_decremented_and_expired_messages_are_dropped(state):
    start = state._clock()
    state._clock = lambda: start
    state.save_session("device", "SN1", 3600, [])
    for topic, interval in (("short", 10), ("none", None), ("long", 100)):
        held = replace(message(f"t/{topic}"), expiry_interval=interval)
        assert state.enqueue("device", "SN1", held) is StoreOutcome.STORED
    for topic, interval in (("a/short", 10), ("a/long", 100)):
        assert state.set_retained(replace(message(topic), expiry_interval=interval)) is (
            StoreOutcome.STORED
        )
    state._clock = lambda: start + timedelta(seconds=20, milliseconds=500)
    # The expired one is deleted and does not count against the limit of what is taken.
    taken = state.take_queued("device", "SN1", 2)
    assert [(m.topic, m.expiry_interval) for m in taken] == [("t/none", None), ("t/long", 80)]
    assert state.take_queued("device", "SN1", 10) == []
    found = state.retained_matching("a/#", 10)
    assert [(m.topic, m.expiry_interval) for m in found] == [("a/long", 80)]
