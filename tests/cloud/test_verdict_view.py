"""The verdict view (``tether.cloud.verdict_view``): a cached verdict never outlives its change.

Over real TLS (the ``cloud`` fixture): a device answered from the view is refused at its next
handshake once its certificate is revoked, the device disabled or its CA deactivated, "last
seen" is still recorded, and a feed that cannot read the registry empties the view and refuses.
Then a property: on any sequence of registry changes, each followed by the feed, the service's
answer (from the view when it has one) is the registry's own answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cloud.conftest import ACTOR, TIMEOUT, Cloud, CloudPKI
from tests.cloud.test_changes import _Deaf
from tether.cloud.changes import Interval
from tether.cloud.gateway import HandshakeRefused, Identity
from tether.cloud.gateway.identity import IdentityKind
from tether.cloud.registry import CARole, CAStatus, CertState, DeviceStatus, Provisioning, Registry
from tether.cloud.service import CloudService
from tether.cloud.setup import init_data_dir
from tether.cloud.verdict_view import Cached, VerdictView
from tether.errors import TetherError
from tether.pki import sha256_fingerprint
from tether.pki.store import pem


def _cached(cloud: Cloud, serial: str) -> object:
    """Connect twice; the second answer must come from the view. Returns the identity."""
    device = cloud.console_device(serial)
    for _ in range(2):
        connack = cloud.connack(device, serial)
        assert connack is not None and connack.reason_code == 0  # type: ignore[attr-defined]
    fingerprint = sha256_fingerprint(device.certificate)
    assert cloud.running.call(_view_holds(cloud.service, fingerprint))
    return device


async def _view_holds(service: CloudService, fingerprint: str) -> bool:
    return fingerprint in service.view._entries


def _feed_reached(cloud: Cloud, other: Registry) -> None:
    """Wait until this worker's feed has applied every change ``other`` made so far."""
    wanted = other.last_audit_id()
    deadline = time.monotonic() + TIMEOUT
    while cloud.service._last_seen < wanted:
        assert time.monotonic() < deadline, "the feed never caught up"
        time.sleep(0.01)


@pytest.mark.parametrize("change", ["revoke", "disable", "deactivate_ca"])
def test_a_cached_device_is_refused_after_its_registry_change(cloud: Cloud, change: str) -> None:
    device = _cached(cloud, "CON-000100")
    fingerprint = sha256_fingerprint(device.certificate)
    hits = cloud.service.view.hits
    with Registry.open(cloud.settings.database_url) as other:
        if change == "revoke":
            other.revoke_certificate(
                fingerprint, reason=x509.ReasonFlags.key_compromise, actor=ACTOR
            )
        elif change == "disable":
            other.set_device_status("CON-000100", DeviceStatus.DISABLED, actor=ACTOR)
        else:
            other.set_ca_status(
                cloud.fingerprint(cloud.pki.device_ca), CAStatus.INACTIVE, actor=ACTOR
            )
        _feed_reached(cloud, other)
    connack = cloud.connack(device, "CON-000100")
    if change == "deactivate_ca":
        assert connack is None  # the trust store no longer holds the CA: refused in TLS
    else:
        expected = "certificate_revoked" if change == "revoke" else "device_disabled"
        assert connack is not None and connack.reason_str == expected  # type: ignore[attr-defined]
    assert not cloud.running.call(_view_holds(cloud.service, fingerprint))
    assert cloud.service.view.hits == hits  # the refusal did not come from the view


def test_a_revocation_the_feed_has_not_read_yet_still_refuses_the_next_handshake(
    cloud: Cloud,
) -> None:
    """Invariant 6 with the view: the next handshake after the commit, not after the feed."""
    device = _cached(cloud, "CON-000105")
    fingerprint = sha256_fingerprint(device.certificate)
    hold = threading.Event()
    # The feed reads on its own lane: keep it busy so the revocation stays unread by it.
    cloud.service._feed_lane.submit(hold.wait, TIMEOUT)
    try:
        seen = cloud.service._last_seen
        with Registry.open(cloud.settings.database_url) as other:
            other.revoke_certificate(
                fingerprint, reason=x509.ReasonFlags.key_compromise, actor=ACTOR
            )
        connack = cloud.connack(device, "CON-000105")
        assert cloud.service._last_seen == seen  # the feed has still not applied it
        assert cloud.running.call(_view_holds(cloud.service, fingerprint))  # nor dropped it
        assert connack is not None and connack.reason_str == "certificate_revoked"  # type: ignore[attr-defined]
    finally:
        hold.set()


def test_a_verdict_from_the_view_still_records_last_seen(cloud: Cloud) -> None:
    device = _cached(cloud, "CON-000110")
    first = _wait_last_seen(cloud, "CON-000110", after=None)
    hits = cloud.service.view.hits
    again = cloud.connack(device, "CON-000110")
    assert again is not None and again.reason_code == 0  # type: ignore[attr-defined]
    assert cloud.service.view.hits == hits + 1
    assert _wait_last_seen(cloud, "CON-000110", after=first) > first  # type: ignore[operator]


def _wait_last_seen(cloud: Cloud, serial: str, *, after: object) -> object:
    deadline = time.monotonic() + TIMEOUT
    while True:
        seen = cloud.registry.get_device(serial).last_seen
        if seen is not None and (after is None or seen > after):  # type: ignore[operator]
            return seen
        assert time.monotonic() < deadline, "last_seen was never written"
        time.sleep(0.05)


def test_a_feed_that_cannot_read_the_registry_empties_the_view_and_refuses(
    cloud: Cloud,
) -> None:
    device = _cached(cloud, "CON-000120")
    database = Path(cloud.settings.database_url.removeprefix("sqlite:///"))
    database.rename(database.with_suffix(".moved"))
    database.mkdir()  # SQLite cannot open a directory: every new connection fails
    cloud.registry._engine.dispose()
    cloud.service.authority.registry._engine.dispose()
    deadline = time.monotonic() + TIMEOUT
    while cloud.service.feed_current:
        assert time.monotonic() < deadline, "the feed never noticed"
        time.sleep(0.01)
    connack = cloud.connack(device, "CON-000120")
    assert connack is not None and connack.reason_str == "registry_unavailable"  # type: ignore[attr-defined]
    assert len(cloud.service.view) == 0


def test_a_deaf_change_signal_bypasses_the_view_at_once(cloud: Cloud) -> None:
    """A lost LISTEN is noticed by the feed's next read; the view is not used even before."""
    device = _cached(cloud, "CON-000130")
    hits = cloud.service.view.hits
    cloud.service.changes = _Deaf()  # type: ignore[assignment]
    cloud.connack(device, "CON-000130")  # the registry's answer, or feed_behind: not the view
    assert cloud.service.view.hits == hits
    deadline = time.monotonic() + TIMEOUT
    while cloud.service.feed_current:
        assert time.monotonic() < deadline, "the feed never noticed"
        time.sleep(0.01)
    connack = cloud.connack(device, "CON-000130")
    assert connack is not None and connack.reason_str == "registry_feed_behind"  # type: ignore[attr-defined]
    assert len(cloud.service.view) == 0


# -- the property: the view's answer is the registry's answer ---------------------------------


@dataclass
class World:
    """One registry, one (unstarted) service on it, and the leaves that connect."""

    registry: Registry
    service: CloudService
    pki: CloudPKI
    leaves: dict[str, x509.Certificate]
    cas: dict[str, str]  # role -> fingerprint


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("verdict-view")
    pki = CloudPKI(base)
    data = init_data_dir(base / "data", server_ca=pki.server_ca, root_ca=pem(pki.root.certificate))
    registry = Registry.open(data.database_url)
    registry.register_ca(pki.device_ca.certificate, role=CARole.DEVICE, actor=ACTOR)
    registry.register_ca(
        pki.factory_ca.certificate, role=CARole.FACTORY, allow_auto_registration=True, actor=ACTOR
    )
    registry.register_ca(pki.service_ca.certificate, role=CARole.SERVICE, actor=ACTOR)
    cas = {
        "device": sha256_fingerprint(pki.device_ca.certificate),
        "factory": sha256_fingerprint(pki.factory_ca.certificate),
        "service": sha256_fingerprint(pki.service_ca.certificate),
    }
    leaves: dict[str, x509.Certificate] = {}
    for serial in ("DEV-000001", "DEV-000002"):
        registry.add_device(serial, provisioning=Provisioning.CONSOLE, actor=ACTOR)
        for n in (1, 2):  # two certificates per device (a renewal overlap)
            certificate = pki.device(serial).certificate
            registry.add_certificate(
                certificate, device_serial=serial, issuer_fingerprint=cas["device"], actor=ACTOR
            )
            leaves[f"{serial}/{n}"] = certificate
    leaves["JIT-000001"] = pki.device("JIT-000001", ca=pki.factory_ca).certificate
    registry.add_device("ingest", provisioning=Provisioning.CONSOLE, actor=ACTOR)
    service_leaf = pki.service("ingest").certificate
    registry.add_certificate(
        service_leaf, device_serial="ingest", issuer_fingerprint=cas["service"], actor=ACTOR
    )
    leaves["ingest"] = service_leaf
    service = CloudService(registry, data.gateway_settings(port=0), changes=Interval())
    try:
        yield World(registry, service, pki, leaves, cas)
    finally:
        service.authority.close()
        registry.close()


CHANGES = st.one_of(
    st.tuples(st.just("certificate_state"), st.integers(0, 5), st.sampled_from(["a", "i"])),
    st.tuples(st.just("revoke"), st.integers(0, 5), st.just("")),
    st.tuples(st.just("device_status"), st.integers(0, 2), st.sampled_from(["e", "d"])),
    st.tuples(st.just("ca_status"), st.integers(0, 2), st.sampled_from(["a", "i"])),
    st.tuples(st.just("rebind"), st.integers(0, 1), st.sampled_from(["device", "factory"])),
    st.tuples(st.just("group"), st.integers(0, 2), st.sampled_from(["g1", "g2"])),
)
SERIALS = ("DEV-000001", "DEV-000002", "ingest")


def _apply(world: World, change: tuple[str, int, str]) -> None:
    """Make one registry change; a change the registry refuses (a bad transition) is skipped."""
    kind, index, value = change
    registry, leaves = world.registry, list(world.leaves.values())
    try:
        if kind == "certificate_state":
            state = CertState.ACTIVE if value == "a" else CertState.INACTIVE
            registry.set_certificate_state(sha256_fingerprint(leaves[index]), state, actor=ACTOR)
        elif kind == "revoke":
            registry.revoke_certificate(
                sha256_fingerprint(leaves[index]),
                reason=x509.ReasonFlags.superseded,
                actor=ACTOR,
            )
        elif kind == "device_status":
            status = DeviceStatus.ENABLED if value == "e" else DeviceStatus.DISABLED
            registry.set_device_status(SERIALS[index], status, actor=ACTOR)
        elif kind == "ca_status":
            status = CAStatus.ACTIVE if value == "a" else CAStatus.INACTIVE
            fingerprint = list(world.cas.values())[index]
            registry.set_ca_status(fingerprint, status, actor=ACTOR)
        elif kind == "rebind":
            registry.rebind_device(SERIALS[index], ca_fingerprint=world.cas[value], actor=ACTOR)
        else:
            registry.add_device_group(SERIALS[index], value, actor=ACTOR)
    except TetherError:  # a refused transition (revoked is final...) is part of the sequence
        pass


async def _answer_of_service(service: CloudService, leaf: x509.Certificate) -> Identity | str:
    try:
        return await service.authorize(leaf)
    except HandshakeRefused as exc:
        return exc.code


def _answer_of_registry(service: CloudService, leaf: x509.Certificate) -> Identity | str:
    try:
        return service.authority.authorize_sync(leaf)
    except HandshakeRefused as exc:
        return exc.code


async def _check(world: World, changes: list[tuple[str, int, str]]) -> None:
    """After each change and the feed, every leaf gets the registry's answer, twice."""
    await world.service.apply_changes()
    for change in changes:
        _apply(world, change)
        await world.service.apply_changes()
        for leaf in world.leaves.values():
            expected = _answer_of_registry(world.service, leaf)
            await world.service.apply_changes()  # a JIT registration is a change too
            for _ in range(2):  # the second answer comes from the view when it may
                assert await _answer_of_service(world.service, leaf) == expected


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CHANGES, min_size=1, max_size=6))
def test_the_view_answers_what_the_registry_answers(
    world: World, changes: list[tuple[str, int, str]]
) -> None:
    asyncio.run(_check(world, changes))


def test_the_view_answers_a_known_device_and_forgets_it_when_revoked(world: World) -> None:
    """The property is not vacuous: the view does answer, and a revocation refuses."""
    with contextlib.suppress(TetherError):  # the property may have left the CA inactive
        world.registry.set_ca_status(world.cas["device"], CAStatus.ACTIVE, actor=ACTOR)
    world.registry.add_device("DEV-000009", provisioning=Provisioning.CONSOLE, actor=ACTOR)
    leaf = world.pki.device("DEV-000009").certificate
    fingerprint = sha256_fingerprint(leaf)
    world.registry.add_certificate(
        leaf, device_serial="DEV-000009", issuer_fingerprint=world.cas["device"], actor=ACTOR
    )

    async def run() -> list[Identity | str]:
        await world.service.apply_changes()
        answers = [await _answer_of_service(world.service, leaf) for _ in range(2)]
        hits = world.service.view.hits
        answers.append(await _answer_of_service(world.service, leaf))
        assert world.service.view.hits == hits + 1
        world.registry.revoke_certificate(
            fingerprint, reason=x509.ReasonFlags.key_compromise, actor=ACTOR
        )
        await world.service.apply_changes()
        assert fingerprint not in world.service.view._entries
        answers.append(await _answer_of_service(world.service, leaf))
        return answers

    *allowed, refused = asyncio.run(run())
    assert all(isinstance(a, Identity) and a.name == "DEV-000009" for a in allowed)
    assert refused == "certificate_revoked"


def test_the_view_is_bounded_and_forgets_its_oldest_first() -> None:
    """Past ``capacity`` the oldest verdict goes (and its device's index with it); 0 is off."""
    now = dt.datetime.now(dt.UTC)
    day = dt.timedelta(days=1)

    def cached(index: int) -> Cached:
        identity = Identity(IdentityKind.DEVICE, f"SN{index}", f"{index:064x}", "CN=ca")
        return Cached(identity, index, now - day, now + day)

    view = VerdictView(capacity=3)
    for index in range(5):
        view.put(cached(index))
    assert len(view) == 3
    assert [view.get(f"{i:064x}", now) is not None for i in range(5)] == [False] * 2 + [True] * 3
    view.drop_serial("SN0")  # evicted: nothing left to drop, and no error
    view.drop_serial("SN4")
    assert len(view) == 2
    off = VerdictView(capacity=0)
    off.put(cached(9))
    assert len(off) == 0
