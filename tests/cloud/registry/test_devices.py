"""Devices: add, get, status, search and pagination, first/last seen."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tether.cloud.registry import (
    DeviceExistsError,
    DeviceNotFoundError,
    DeviceStatus,
    InvalidRegistryInputError,
    Provisioning,
    Registry,
)
from tether.errors import ConflictError, InvalidInputError, NotFoundError

Snapshot = Callable[[], dict[str, list[tuple[object, ...]]]]


def test_add_and_get_device(registry: Registry) -> None:
    added = registry.add_device("SN-0001", provisioning=Provisioning.FACTORY, actor="station-7")
    assert added.serial == "SN-0001"
    assert added.status is DeviceStatus.ENABLED
    assert added.provisioning is Provisioning.FACTORY
    assert added.first_seen is None and added.last_seen is None
    assert added.created_at.tzinfo is UTC
    assert registry.get_device("SN-0001") == added
    [entry] = registry.list_audit().items
    assert (entry.actor, entry.action, entry.target) == ("station-7", "device.add", "SN-0001")
    assert entry.details == {"provisioning": "factory"}


def test_duplicate_device_is_a_conflict_and_adds_no_audit_row(
    registry: Registry, snapshot: Snapshot
) -> None:
    registry.add_device("SN-0001", provisioning=Provisioning.CONSOLE, actor="a")
    before = snapshot()
    with pytest.raises(DeviceExistsError) as info:
        registry.add_device("SN-0001", provisioning=Provisioning.CSR, actor="b")
    assert isinstance(info.value, ConflictError) and info.value.code == "device_exists"
    assert snapshot() == before
    assert registry.list_audit().total == 1


@pytest.mark.parametrize("bad", ["", " SN", "SN 1", "-lead", "x" * 129, "dev/1", "dév"])
def test_bad_serial_is_invalid_input(registry: Registry, snapshot: Snapshot, bad: str) -> None:
    before = snapshot()
    with pytest.raises(InvalidInputError):
        registry.add_device(bad, provisioning=Provisioning.CONSOLE, actor="a")
    assert snapshot() == before


def test_get_unknown_device_is_not_found(registry: Registry) -> None:
    with pytest.raises(DeviceNotFoundError) as info:
        registry.get_device("nope")
    assert isinstance(info.value, NotFoundError) and info.value.code == "device_not_found"


def test_set_device_status(registry: Registry, snapshot: Snapshot) -> None:
    registry.add_device("d1", provisioning=Provisioning.CONSOLE, actor="a")
    disabled = registry.set_device_status("d1", DeviceStatus.DISABLED, actor="ops")
    assert disabled.status is DeviceStatus.DISABLED
    assert registry.get_device("d1").status is DeviceStatus.DISABLED
    entry = registry.list_audit().items[0]
    assert (entry.action, entry.actor, dict(entry.details)) == (
        "device.status",
        "ops",
        {"from": "enabled", "to": "disabled"},
    )
    before = snapshot()
    registry.set_device_status("d1", DeviceStatus.DISABLED, actor="ops")  # no-op
    assert snapshot() == before
    with pytest.raises(DeviceNotFoundError):
        registry.set_device_status("d2", DeviceStatus.DISABLED, actor="ops")
    assert snapshot() == before


def test_list_devices_pages_searches_and_filters(registry: Registry) -> None:
    for i in range(7):
        registry.add_device(f"sensor-{i:02d}", provisioning=Provisioning.FACTORY, actor="a")
    registry.add_device("gateway_1", provisioning=Provisioning.CONSOLE, actor="a")
    registry.add_device("gatewayX1", provisioning=Provisioning.CONSOLE, actor="a")
    registry.set_device_status("sensor-03", DeviceStatus.DISABLED, actor="a")

    first = registry.list_devices(search="sensor", limit=3)
    assert [d.serial for d in first.items] == ["sensor-00", "sensor-01", "sensor-02"]
    assert (first.total, first.next_offset) == (7, 3)
    last = registry.list_devices(search="sensor", offset=6, limit=3)
    assert [d.serial for d in last.items] == ["sensor-06"]
    assert last.next_offset is None
    assert registry.list_devices(offset=100).items == ()
    assert registry.list_devices().total == 9
    # "_" is matched literally, not as a LIKE wildcard.
    assert [d.serial for d in registry.list_devices(search="y_1").items] == ["gateway_1"]
    disabled = registry.list_devices(status=DeviceStatus.DISABLED)
    assert [d.serial for d in disabled.items] == ["sensor-03"]


@pytest.mark.parametrize(("offset", "limit"), [(-1, 10), (0, 0), (0, 1001)])
def test_bad_page_is_invalid_input(registry: Registry, offset: int, limit: int) -> None:
    with pytest.raises(InvalidRegistryInputError):
        registry.list_devices(offset=offset, limit=limit)


def test_touch_device_sets_first_and_last_seen_without_audit(registry: Registry) -> None:
    registry.add_device("d1", provisioning=Provisioning.CONSOLE, actor="a")
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    registry.touch_device("d1", t0)
    registry.touch_device("d1", t0 + timedelta(hours=1))
    registry.touch_device("d1", t0 + timedelta(minutes=5))  # late, out of order: ignored
    seen = registry.get_device("d1")
    assert seen.first_seen == t0
    assert seen.last_seen == t0 + timedelta(hours=1)
    assert registry.list_audit().total == 1  # only device.add
    other_zone = datetime(2030, 1, 1, 16, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=5)))
    registry.touch_device("d1", other_zone)
    assert registry.get_device("d1").last_seen == datetime(2030, 1, 1, 16, 0, tzinfo=UTC)


def test_touch_unknown_or_naive_is_refused(registry: Registry) -> None:
    with pytest.raises(DeviceNotFoundError):
        registry.touch_device("ghost", datetime.now(UTC))
    registry.add_device("d1", provisioning=Provisioning.CONSOLE, actor="a")
    with pytest.raises(InvalidRegistryInputError):
        registry.touch_device("d1", datetime.now())  # naive on purpose
    assert registry.get_device("d1").last_seen is None


def test_touch_devices_writes_a_batch_in_one_call_and_skips_unknown_serials(
    registry: Registry,
) -> None:
    registry.add_device("d1", provisioning=Provisioning.CONSOLE, actor="a")
    registry.add_device("d2", provisioning=Provisioning.CONSOLE, actor="a")
    registry.touch_device("d2", datetime(2030, 1, 1, 13, 0, tzinfo=UTC))
    t0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    found = registry.touch_devices({"d1": t0, "d2": t0, "ghost": t0})
    assert found == 2
    assert registry.get_device("d1").last_seen == t0
    assert registry.get_device("d2").last_seen == datetime(2030, 1, 1, 13, 0, tzinfo=UTC)
    with pytest.raises(InvalidRegistryInputError):
        registry.touch_devices({"d1": t0 + timedelta(hours=2), "d2": datetime.now()})
    assert registry.get_device("d1").last_seen == t0  # a refused batch writes nothing
