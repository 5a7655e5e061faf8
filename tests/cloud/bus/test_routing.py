"""The bus contract, run on both implementations: in process, and NATS (a real nats-server).

Two brokers stand for two gateway workers. What must hold on either bus: a message reaches the
other worker's matching sessions once (even when overlapping filters match twice), never comes
back to the publishing worker, keeps its attribution and properties, stops when the last
session drops the filter, and control announcements reach the other workers only. Shared
groups (``$share``): each message goes to one member of the group in the whole cluster, from
whichever worker it is published on; a worker whose members all drop it passes it on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import pytest

from tests.natsd import nats_cluster
from tether.cloud.bus import InProcessHub
from tether.cloud.bus.nats import BusUnavailableError, NatsBus
from tether.cloud.bus.natsd import free_port
from tether.cloud.gateway import shared
from tether.cloud.gateway.broker import Broker, Message, Subscription, attributed_properties
from tether.cloud.gateway.identity import Identity, IdentityKind

SENDER = Identity(IdentityKind.DEVICE, "SN-1", "ab" * 32, "CN=factory", "cd" * 32)


class Recorder:
    """A session as the broker sees it: keeps what it is given (or drops all, ``full``)."""

    def __init__(self, *, full: bool = False) -> None:
        self.got: list[tuple[Message, int]] = []
        self.offered = 0
        self.full = full

    def deliver(self, message: Message, qos: int) -> bool:
        self.offered += 1
        if self.full:
            return False
        self.got.append((message, qos))
        return True


def message(topic: str, payload: bytes = b"x", qos: int = 1) -> Message:
    return Message(
        topic=topic,
        payload=payload,
        qos=qos,
        sender=SENDER,
        user_properties=attributed_properties(SENDER, [("tether-sender", "forged"), ("k", "v")]),
        content_type="text/plain",
        correlation_data=b"\x00\x01",
        response_topic="services/reply",
    )


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with nats_cluster(tmp_path_factory.mktemp("nats")) as servers:
        yield servers[0].url


Scenario = Callable[[list[Broker]], Awaitable[None]]


@pytest.fixture(params=["inprocess", "nats"])
def on_two_workers(request: pytest.FixtureRequest, nats_url: str) -> Callable[[Scenario], None]:
    """Run a scenario on two brokers joined by the bus under test, on a fresh loop."""

    async def run(scenario: Scenario) -> None:
        if request.param == "inprocess":
            hub = InProcessHub()
            buses = [hub.endpoint(), hub.endpoint()]
        else:
            buses = [NatsBus([nats_url]), NatsBus([nats_url])]
        for bus in buses:
            await bus.start()
        try:
            async with asyncio.timeout(20):
                await scenario([Broker(bus=bus) for bus in buses])
        finally:
            for bus in buses:
                await bus.close()

    return lambda scenario: asyncio.run(run(scenario))


async def settle(brokers: list[Broker]) -> None:
    """Let subscriptions reach the server (NATS) or the next loop turn (in process)."""
    for broker in brokers:
        flush = getattr(broker.bus, "flush", None)
        if flush is not None:
            await flush()
    await asyncio.sleep(0.05)


async def until(condition: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


def test_a_message_reaches_the_other_worker_once_with_its_attribution(
    on_two_workers: Callable[[Scenario], None],
) -> None:
    async def scenario(brokers: list[Broker]) -> None:
        a, b = brokers
        here, there = Recorder(), Recorder()
        a.subscribe(here, Subscription("devices/#", 1))
        b.subscribe(there, Subscription("devices/#", 1))
        b.subscribe(there, Subscription("devices/+/telemetry", 0))  # overlapping: still one copy
        await settle(brokers)
        assert a.publish(message("devices/SN-1/telemetry"), origin=None) == 2  # local + the bus
        await until(lambda: there.got)
        await asyncio.sleep(0.1)
        assert len(here.got) == 1  # local delivery, and nothing echoed back by the bus
        assert len(there.got) == 1
        received, qos = there.got[0]
        assert qos == 1
        assert received.sender == SENDER
        assert received.user_properties == (("k", "v"), ("tether-sender", "SN-1"))
        assert received.content_type == "text/plain"
        assert received.correlation_data == b"\x00\x01"
        assert received.response_topic == "services/reply"

    on_two_workers(scenario)


def test_awkward_topics_cross_the_bus_intact(on_two_workers: Callable[[Scenario], None]) -> None:
    async def scenario(brokers: list[Broker]) -> None:
        a, b = brokers
        there = Recorder()
        b.subscribe(there, Subscription("#", 1))
        await settle(brokers)
        topics = ["a.b/c d", "x//y", "$odd/%41", "日本/*/>", "/"]
        for topic in topics:
            a.publish(message(topic), origin=None)
        await until(lambda: len(there.got) == len(topics) - 1)
        await asyncio.sleep(0.1)
        # "#" does not match a topic starting with "$" (MQTT 4.7.2): the receiving tree decides.
        assert [m.topic for m, _ in there.got] == [t for t in topics if not t.startswith("$")]

    on_two_workers(scenario)


def test_interest_ends_with_the_last_session_holding_the_filter(
    on_two_workers: Callable[[Scenario], None],
) -> None:
    async def scenario(brokers: list[Broker]) -> None:
        a, b = brokers
        first, second = Recorder(), Recorder()
        b.subscribe(first, Subscription("t/1", 1))
        b.subscribe(second, Subscription("t/1", 1))
        b.remove(first)
        await settle(brokers)
        a.publish(message("t/1", b"one"), origin=None)
        await until(lambda: second.got)
        b.unsubscribe(second, "t/1")
        await settle(brokers)
        a.publish(message("t/1", b"two"), origin=None)
        await asyncio.sleep(0.2)
        assert [m.payload for m, _ in second.got] == [b"one"]
        assert first.got == []

    on_two_workers(scenario)


def test_order_is_kept_per_publisher(on_two_workers: Callable[[Scenario], None]) -> None:
    async def scenario(brokers: list[Broker]) -> None:
        a, b = brokers
        there = Recorder()
        b.subscribe(there, Subscription("seq", 1))
        await settle(brokers)
        for index in range(300):
            a.publish(message("seq", str(index).encode()), origin=None)
        await until(lambda: len(there.got) == 300)
        assert [int(m.payload) for m, _ in there.got] == list(range(300))

    on_two_workers(scenario)


GROUP = shared.SharedFilter("ingest", "devices/+/telemetry")


def test_a_shared_group_on_two_workers_gets_each_message_once(
    on_two_workers: Callable[[Scenario], None],
) -> None:
    async def scenario(brokers: list[Broker]) -> None:
        members = [Recorder(), Recorder()]
        for broker, member in zip(brokers, members, strict=True):
            shared.join(broker, GROUP, member, 1)
        await settle(brokers)
        for index in range(40):  # from both workers
            brokers[index % 2].publish(message(f"devices/SN-{index}/telemetry"), origin=None)
        await until(lambda: sum(len(m.got) for m in members) == 40)
        await asyncio.sleep(0.1)  # a duplicate would arrive now
        topics = sorted(m.topic for member in members for m, _ in member.got)
        assert topics == sorted(f"devices/SN-{index}/telemetry" for index in range(40))
        assert all(member.got for member in members)  # NATS spreads, the hub alternates

    on_two_workers(scenario)


def test_a_shared_group_on_one_worker_gets_the_other_workers_messages(
    on_two_workers: Callable[[Scenario], None],
) -> None:
    async def scenario(brokers: list[Broker]) -> None:
        a, b = brokers
        member = Recorder()
        group = shared.join(b, GROUP, member, 1)
        await settle(brokers)
        for index in range(5):
            a.publish(message("devices/SN-1/telemetry", b"%d" % index), origin=None)
        a.publish(message("devices/SN-1/other"), origin=None)  # not the group's filter
        await until(lambda: len(member.got) == 5)
        shared.leave(b, group, member)  # the last member: the worker leaves the queue group
        await settle(brokers)
        a.publish(message("devices/SN-1/telemetry", b"late"), origin=None)
        await asyncio.sleep(0.2)
        assert [m.payload for m, _ in member.got] == [b"%d" % i for i in range(5)]

    on_two_workers(scenario)


def test_a_worker_whose_members_all_drop_passes_the_message_on(
    on_two_workers: Callable[[Scenario], None],
) -> None:
    async def scenario(brokers: list[Broker]) -> None:
        a, b = brokers
        stuck, taker = Recorder(full=True), Recorder()
        shared.join(a, GROUP, stuck, 1)
        shared.join(b, GROUP, taker, 1)
        await settle(brokers)
        for _ in range(40):
            a.publish(message("devices/SN-1/telemetry"), origin=None)
        # In process the hub tries the next worker: all 40 arrive. NATS picks a worker at
        # random per pass, so a copy is lost only if it lands on ``a`` four times (1 in 16):
        # expected 37.5 of 40, fewer than 30 about once in a million runs.
        lost = getattr(a.bus, "shared_lost", None)
        await until(lambda: len(taker.got) + (lost is not None and a.bus.shared_lost) >= 40)  # type: ignore[union-attr]
        await asyncio.sleep(0.1)
        assert len(taker.got) == (40 if lost is None else 40 - a.bus.shared_lost)  # type: ignore[union-attr]
        assert len(taker.got) >= 30

    on_two_workers(scenario)


def test_a_copy_nobody_takes_is_dropped_after_the_bounded_passes(nats_url: str) -> None:
    async def scenario() -> None:
        bus = NatsBus([nats_url])
        await bus.start()
        try:
            broker = Broker(bus=bus)
            stuck = Recorder(full=True)
            shared.join(broker, GROUP, stuck, 1)
            await bus.flush()
            broker.publish(message("devices/SN-1/telemetry"), origin=None)
            await until(lambda: bus.shared_lost == 1)
            await asyncio.sleep(0.1)
            assert stuck.offered == 4  # the first copy and three passes, then counted lost
        finally:
            await bus.close()

    asyncio.run(scenario())


def test_announcements_reach_the_other_workers_only(nats_url: str) -> None:
    asyncio.run(announcements(nats_url))


async def announcements(nats_url: str) -> None:
    for buses in (
        (lambda hub: [hub.endpoint(), hub.endpoint()])(InProcessHub()),
        [NatsBus([nats_url]), NatsBus([nats_url])],
    ):
        heard: list[list[bytes]] = [[], []]
        for index, bus in enumerate(buses):
            bus.listen("session", heard[index].append)
            await bus.start()
        await asyncio.sleep(0.05)
        buses[0].announce("session", b"claim")
        await until(lambda heard=heard: heard[1])
        await asyncio.sleep(0.05)
        assert heard == [[], [b"claim"]]
        for bus in buses:
            await bus.close()


def test_an_unreachable_nats_is_a_clear_error() -> None:
    bus = NatsBus([f"nats://127.0.0.1:{free_port()}"], connect_timeout=0.5)
    with pytest.raises(BusUnavailableError) as caught:
        asyncio.run(bus.start())
    assert caught.value.code == "bus_unavailable"
