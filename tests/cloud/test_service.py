"""The cloud end to end: factory and console devices talk to a service through CloudService.

Real parts only: a SoftHSM2 token holds the factory device's key (awscrt signs the TLS
handshake inside it), the console device's key is a file, the service is paho over mutual TLS,
the registry is a SQLite file that a second ``Registry`` (another process, in effect) changes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography import x509
from mqtt5 import DisconnectReasonCode

from tests.cloud.conftest import ACTOR, TIMEOUT, Cloud
from tests.cloud.gateway.harness import wait_for_log
from tests.softhsm import Token
from tests.support.mqtt import RawClient, publish_properties
from tether.cloud.gateway.broker import SENDER_PROPERTY
from tether.cloud.registry import CARole, CAStatus, DeviceStatus, Provisioning, Registry
from tether.cloud.service import SEEN_FLUSH_INTERVAL
from tether.device import CloudEndpoint, DeviceClient, DeviceIdentity, FileKey, Pkcs11Key
from tether.factory import FactoryStation, ManufacturingLog
from tether.pki import Role, sha256_fingerprint
from tether.pki.store import pem
from tether.secure_element import Pkcs11SecureElement

SERVICE = "telemetry-ingest"
DROP_WITHIN = 2.0


def _endpoint(cloud: Cloud) -> CloudEndpoint:
    return CloudEndpoint(host="127.0.0.1", port=cloud.port, pinned_ca=cloud.pki.root_path)


def _factory_device(cloud: Cloud, token: Token, serial: str, tmp_path: Path) -> DeviceIdentity:
    """Provision ``serial`` on the factory line: key born in the token, factory CA signs."""
    element = Pkcs11SecureElement.open(token.module, token.label, token.pin)
    try:
        station = FactoryStation(
            cloud.pki.factory_ca, element, ManufacturingLog(tmp_path / "manufacturing.jsonl")
        )
        made = station.provision(serial)
    finally:
        element.close()
    cert_path = tmp_path / f"{serial}.crt.pem"
    cert_path.write_bytes(pem(made.certificate))
    key = Pkcs11Key(module=token.module, token_label=token.label, key_label=serial, pin=token.pin)
    return DeviceIdentity.load(cert_path, key)


def _sender(message: object) -> str | None:
    properties = getattr(message, "properties", None)
    pairs = getattr(properties, "UserProperty", []) or []
    return dict(pairs).get(SENDER_PROPERTY)


def test_factory_and_console_devices_reach_a_service_and_back(
    cloud: Cloud, token: Token, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    factory_serial, console_serial = "FAC-000001", "CON-000001"
    factory = _factory_device(cloud, token, factory_serial, tmp_path)
    console = cloud.console_device(console_serial)
    service = cloud.paho(cloud.service_identity(SERVICE), SERVICE)
    try:
        assert not service.subscribe("devices/+/telemetry")[0].is_failure
        with (
            DeviceClient(factory, _endpoint(cloud)) as hsm_device,
            DeviceClient(
                DeviceIdentity.load(console.cert_path, FileKey(console.key_path)), _endpoint(cloud)
            ) as file_device,
        ):
            assert hsm_device.connect().reason_name == "SUCCESS"
            assert file_device.connect().reason_name == "SUCCESS"
            # The factory unit was unknown: the factory CA let it register on first contact.
            assert cloud.registry.get_device(factory_serial).provisioning is Provisioning.JIT
            fingerprint = sha256_fingerprint(
                x509.load_pem_x509_certificate(factory.certificate.read_bytes())
            )
            assert cloud.registry.get_certificate(fingerprint).device_serial == factory_serial

            for device in (hsm_device, file_device):
                serial = device.identity.serial
                device.subscribe(f"devices/{serial}/commands/#")
                device.publish(f"devices/{serial}/telemetry", f"hello from {serial}")
            received = {}
            for _ in range(2):
                message = service.messages.get(timeout=TIMEOUT)
                received[message.topic] = (message.payload, _sender(message))
            assert received == {
                f"devices/{factory_serial}/telemetry": (
                    f"hello from {factory_serial}".encode(),
                    factory_serial,
                ),
                f"devices/{console_serial}/telemetry": (
                    f"hello from {console_serial}".encode(),
                    console_serial,
                ),
            }

            for device in (hsm_device, file_device):
                serial = device.identity.serial
                info = service.client.publish(f"devices/{serial}/commands/x", b"reboot", qos=1)
                info.wait_for_publish(TIMEOUT)
                command = device.receive(TIMEOUT)
                assert (command.topic, command.payload) == (
                    f"devices/{serial}/commands/x",
                    b"reboot",
                )
        # The PKCS#11 device really did TLS 1.2 with its key in the token (DESIGN facts).
        established = [
            r.getMessage()
            for r in caplog.records
            if getattr(r, "tether_code", None) == "tls_established"
        ]
        assert any("TLSv1.2" in text and factory_serial in text for text in established)
        assert any("TLSv1.3" in text and console_serial in text for text in established)
    finally:
        service.stop()


def test_a_forged_sender_property_is_replaced_by_the_certificate_identity(cloud: Cloud) -> None:
    console = cloud.console_device("CON-000002")
    service = cloud.paho(cloud.service_identity(SERVICE), SERVICE)
    device = cloud.paho(console, "CON-000002")
    try:
        service.subscribe("devices/+/telemetry")
        device.client.publish(
            "devices/CON-000002/telemetry",
            b"x",
            qos=1,
            properties=publish_properties(**{SENDER_PROPERTY: "CON-999999"}),
        ).wait_for_publish(TIMEOUT)
        assert _sender(service.messages.get(timeout=TIMEOUT)) == "CON-000002"
    finally:
        device.stop()
        service.stop()


# -- live sessions end when the registry says so ----------------------------------------------


def _other_process_registry(cloud: Cloud) -> Registry:
    """A second Registry on the same file: what an operator's command or the API would use."""
    return Registry.open(cloud.settings.database_url)


def _assert_dropped(client: object, started: float) -> None:
    reason = client.disconnects.get(timeout=TIMEOUT)  # type: ignore[attr-defined]
    assert time.monotonic() - started < DROP_WITHIN
    assert reason.value == DisconnectReasonCode.ADMINISTRATIVE_ACTION


def test_revocation_by_another_process_drops_the_live_session_and_refuses_reconnect(
    cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    device = cloud.console_device("CON-000010")
    bystander_identity = cloud.console_device("CON-000011")
    live = cloud.paho(device, "CON-000010")
    bystander = cloud.paho(bystander_identity, "CON-000011")
    try:
        with _other_process_registry(cloud) as other:
            started = time.monotonic()
            other.revoke_certificate(
                sha256_fingerprint(device.certificate),
                reason=x509.ReasonFlags.key_compromise,
                actor=ACTOR,
            )
        _assert_dropped(live, started)
        assert wait_for_log(caplog, "session_dropped").identity == "CON-000010"
        assert bystander.disconnects.empty()
        assert {i.name for i in cloud.service.gateway.sessions()} == {"CON-000011"}
        live.client.loop_stop()
        again = RawClient(cloud.port, cloud.tls_context(device))
        try:
            connack = again.connect("CON-000010")
            assert connack is not None and connack.reason_code == 0x86  # bad credential
            assert connack.reason_str == "certificate_revoked"
        finally:
            again.close()
    finally:
        live.client.loop_stop()
        bystander.stop()


def test_disabling_a_device_drops_it_and_refuses_it_until_enabled(
    cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    device = cloud.console_device("CON-000020")
    live = cloud.paho(device, "CON-000020")
    try:
        with _other_process_registry(cloud) as other:
            started = time.monotonic()
            other.set_device_status("CON-000020", DeviceStatus.DISABLED, actor=ACTOR)
        _assert_dropped(live, started)
        live.client.loop_stop()
        refused = RawClient(cloud.port, cloud.tls_context(device))
        try:
            connack = refused.connect("CON-000020")
            assert connack is not None and connack.reason_str == "device_disabled"
        finally:
            refused.close()
        cloud.registry.set_device_status("CON-000020", DeviceStatus.ENABLED, actor=ACTOR)
        cloud.paho(device, "CON-000020").stop()  # connects again (raises if refused)
    finally:
        live.client.loop_stop()


def test_deactivating_a_ca_drops_every_session_under_it_and_only_those(
    cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    first = cloud.paho(cloud.console_device("CON-000030"), "CON-000030")
    second = cloud.paho(cloud.console_device("CON-000031"), "CON-000031")
    service = cloud.paho(cloud.service_identity(SERVICE), SERVICE)
    try:
        with _other_process_registry(cloud) as other:
            started = time.monotonic()
            other.set_ca_status(
                cloud.fingerprint(cloud.pki.device_ca), CAStatus.INACTIVE, actor=ACTOR
            )
        _assert_dropped(first, started)
        _assert_dropped(second, started)
        assert service.disconnects.empty()
        assert [i.name for i in cloud.service.gateway.sessions()] == [SERVICE]
        first.client.loop_stop()
        second.client.loop_stop()
        # The TLS trust store was rebuilt without the CA: a new handshake fails in TLS.
        retry = RawClient(cloud.port, cloud.tls_context(cloud.console_device("CON-000032")))
        try:
            assert retry.connect("CON-000032") is None
        finally:
            retry.close()
        wait_for_log(caplog, "ca_not_registered")
    finally:
        first.client.loop_stop()
        second.client.loop_stop()
        service.stop()


def test_a_revocation_landing_while_a_verdict_is_in_flight_still_refuses(
    cloud: Cloud, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry answered "ok", then the revocation committed and the feed applied it,
    all before the verdict reached the gateway: the session must not survive."""
    device = cloud.console_device("CON-000040")
    fingerprint = sha256_fingerprint(device.certificate)
    registry = cloud.service.authority.registry
    real_check = registry.check_connection
    feed_caught_up: list[bool] = []

    def check_then_revoke(**kwargs: str):
        verdict = real_check(**kwargs)
        with _other_process_registry(cloud) as other:
            entry = other.revoke_certificate(
                fingerprint, reason=x509.ReasonFlags.key_compromise, actor=ACTOR
            )
            wanted = other.list_audit(target=entry.fingerprint, limit=1).items[0].id
        deadline = time.monotonic() + TIMEOUT
        while cloud.service._last_seen < wanted and time.monotonic() < deadline:
            time.sleep(0.01)
        feed_caught_up.append(cloud.service._last_seen >= wanted)
        return verdict  # stale: it said "ok"

    monkeypatch.setattr(registry, "check_connection", check_then_revoke)
    client = RawClient(cloud.port, cloud.tls_context(device))
    try:
        connack = client.connect("CON-000040")
        assert feed_caught_up == [True]
        assert connack is not None and connack.reason_str == "certificate_revoked"
        assert client.wait_closed(timeout=5) == []
    finally:
        client.close()
    assert cloud.service.gateway.sessions() == []
    record = wait_for_log(caplog, "certificate_revoked")
    assert "while its handshake was checked" in record.getMessage()


def test_an_unreachable_registry_fails_closed(
    cloud: Cloud, caplog: pytest.LogCaptureFixture
) -> None:
    device = cloud.console_device("CON-000050")
    database = Path(cloud.settings.database_url.removeprefix("sqlite:///"))
    database.rename(database.with_suffix(".moved"))
    database.mkdir()  # SQLite cannot open a directory: every new connection fails
    cloud.registry._engine.dispose()  # drop pooled connections to the moved file
    client = RawClient(cloud.port, cloud.tls_context(device))
    try:
        connack = client.connect("CON-000050")
        assert connack is not None and connack.reason_str == "registry_unavailable"
    finally:
        client.close()
    record = wait_for_log(caplog, "registry_unavailable")
    assert "registry is unreachable" in record.getMessage()
    assert cloud.service.gateway.sessions() == []


def test_last_seen_is_written_in_batches_while_the_service_runs(cloud: Cloud) -> None:
    """A connection's "last seen" reaches the registry within the flush interval, not later."""
    device = cloud.console_device("CON-000060")
    client = RawClient(cloud.port, cloud.tls_context(device))
    try:
        connack = client.connect("CON-000060")
        assert connack is not None and connack.reason_code == 0
    finally:
        client.close()
    deadline = time.monotonic() + SEEN_FLUSH_INTERVAL * 3 + TIMEOUT
    while cloud.registry.get_device("CON-000060").last_seen is None:
        assert time.monotonic() < deadline, "last_seen was never written"
        time.sleep(0.05)
    assert cloud.registry.list_audit(target="CON-000060").total == 1  # device.add only


def test_deactivating_a_ca_spares_a_namesake_ca(cloud: Cloud, tmp_path: Path) -> None:
    # A second device CA with the very same subject name, another key (a look-alike or a
    # renewed CA): deactivating it must not drop sessions under the first one.
    namesake = cloud.pki.root.create_issuing_ca(common_name="E2E Device CA", role=Role.DEVICE)
    assert namesake.certificate.subject == cloud.pki.device_ca.certificate.subject
    namesake_fp = cloud.registry.register_ca(
        namesake.certificate, role=CARole.DEVICE, actor=ACTOR
    ).fingerprint
    cloud.running.call(cloud.service.apply_changes())
    kept = cloud.paho(cloud.console_device("CON-000040"), "CON-000040")
    gone_identity = cloud.pki.device("CON-000041", ca=namesake).write(tmp_path, "CON-000041")
    cloud.registry.add_device("CON-000041", provisioning=Provisioning.CONSOLE, actor=ACTOR)
    cloud.registry.add_certificate(
        gone_identity.certificate, device_serial="CON-000041", issuer_fingerprint=namesake_fp,
        actor=ACTOR,
    )  # fmt: skip
    gone = cloud.paho(gone_identity, "CON-000041")
    try:
        with _other_process_registry(cloud) as other:
            started = time.monotonic()
            other.set_ca_status(namesake_fp, CAStatus.INACTIVE, actor=ACTOR)
        _assert_dropped(gone, started)
        gone.client.loop_stop()
        assert kept.disconnects.empty()
        assert [i.name for i in cloud.service.gateway.sessions()] == ["CON-000040"]
    finally:
        gone.client.loop_stop()
        kept.stop()


def test_a_failing_trust_reload_does_not_hold_up_a_later_revocation(
    cloud: Cloud, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = cloud.console_device("CON-000050")
    live = cloud.paho(device, "CON-000050")
    failures: list[int] = []

    def broken_reload() -> None:
        failures.append(1)
        raise OSError("injected: the trust store cannot be rebuilt")

    # Fault injection: the reload is made to fail, as a damaged CA certificate would make it.
    monkeypatch.setattr(cloud.service.gateway, "reload_trust", broken_reload)
    try:
        with _other_process_registry(cloud) as other:
            other.set_ca_auto_registration(
                cloud.fingerprint(cloud.pki.device_ca), True, actor=ACTOR
            )  # a CA change: the feed reloads the trust store, which fails
            started = time.monotonic()
            other.revoke_certificate(
                sha256_fingerprint(device.certificate),
                reason=x509.ReasonFlags.key_compromise,
                actor=ACTOR,
            )
        _assert_dropped(live, started)
        assert failures, "the reload was never attempted"
        assert "rebuilding the TLS trust store failed" in caplog.text
    finally:
        live.client.loop_stop()
