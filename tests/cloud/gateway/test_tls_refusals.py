"""Handshake refusals: each asserts what the client sees AND the gateway's logged reason code."""

from __future__ import annotations

import datetime as dt
import ssl

import mqtt5
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.cloud.gateway.harness import client_context, wait_for_log
from tests.cloud.gateway.pki import DEVICE_SERIAL, SERVICE_NAME
from tests.support.mqtt import RawClient
from tests.support.pki import NOW, raw_ca, raw_leaf, self_signed_leaf
from tether.cloud.gateway import StaticAuthority, certificate_fingerprint


def assert_refused_at_tls(port: int, context: ssl.SSLContext) -> None:
    """The client never gets a CONNACK: the handshake fails, or (TLS 1.3, where the client
    finishes first) the gateway's alert/close arrives on the first read."""
    try:
        client = RawClient(port, context, timeout=5)
    except (ssl.SSLError, ConnectionError):
        return
    try:
        client.send(mqtt5.ConnectPacket(DEVICE_SERIAL, clean_start=True))
        assert client.recv(timeout=5) is None
    except (ssl.SSLError, ConnectionError):
        pass
    finally:
        client.close()


def test_no_client_certificate_is_refused(gateway, pki, caplog):
    assert_refused_at_tls(gateway.port, client_context(pki, None))
    record = wait_for_log(caplog, "no_client_certificate")
    assert record.levelname == "WARNING"
    assert "[no_client_certificate]" in record.getMessage()


def test_certificate_from_unknown_ca_is_refused(gateway, pki, caplog, tmp_path):
    rogue_root = raw_ca("Rogue Root").write(tmp_path, "rogue_root")
    rogue_ca = raw_ca("Rogue Device CA", rogue_root).write(tmp_path, "rogue_ca")
    impostor = raw_leaf(rogue_ca, DEVICE_SERIAL).write(tmp_path, "impostor")
    assert_refused_at_tls(gateway.port, client_context(pki, impostor))
    assert wait_for_log(caplog, "ca_not_registered").levelname == "WARNING"
    assert gateway.gateway.sessions() == []


def test_self_signed_certificate_with_a_real_serial_is_refused(gateway, pki, caplog, tmp_path):
    impostor = self_signed_leaf(DEVICE_SERIAL).write(tmp_path, "selfsigned")
    assert_refused_at_tls(gateway.port, client_context(pki, impostor))
    assert wait_for_log(caplog, "ca_not_registered").levelname == "WARNING"


def test_forged_issuer_name_is_refused(gateway, pki, caplog, tmp_path):
    # Claims the registered device CA as issuer, but is signed by another key.
    rogue = raw_ca("Tether Test Device CA").write(tmp_path, "lookalike_ca")
    forged = raw_leaf(
        rogue,
        DEVICE_SERIAL,
        issuer_name=pki.device_ca.certificate.subject,
        authority_key=pki.device_ca.key.public_key(),
    ).write(tmp_path, "forged")
    assert_refused_at_tls(gateway.port, client_context(pki, forged))
    assert wait_for_log(caplog, "certificate_signature_invalid").levelname == "WARNING"


def test_expired_certificate_is_refused(gateway, pki, caplog, tmp_path):
    expired = raw_leaf(pki.device_ca, DEVICE_SERIAL, not_after=NOW - dt.timedelta(minutes=5)).write(
        tmp_path, "expired"
    )
    assert_refused_at_tls(gateway.port, client_context(pki, expired))
    assert wait_for_log(caplog, "certificate_expired").levelname == "WARNING"


def test_certificate_without_client_auth_is_refused(gateway, pki, caplog, tmp_path):
    signing_only = raw_leaf(pki.device_ca, DEVICE_SERIAL, client_auth=False).write(
        tmp_path, "noclientauth"
    )
    assert_refused_at_tls(gateway.port, client_context(pki, signing_only))
    assert wait_for_log(caplog, "profile_violation").levelname == "WARNING"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_versions_are_refused(gateway, pki, caplog, version):
    context = client_context(
        pki, pki.device, minimum=version, maximum=version, ciphers="DEFAULT:@SECLEVEL=0"
    )
    with pytest.raises((ssl.SSLError, ConnectionError)):
        RawClient(gateway.port, context, timeout=5)
    assert wait_for_log(caplog, "tls_version_refused").levelname == "WARNING"


def test_cbc_only_client_is_refused(gateway, pki, caplog):
    context = client_context(
        pki,
        pki.device,
        maximum=ssl.TLSVersion.TLSv1_2,
        ciphers="ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:AES128-SHA:AES256-SHA256",
    )
    with pytest.raises((ssl.SSLError, ConnectionError)):
        RawClient(gateway.port, context, timeout=5)
    assert wait_for_log(caplog, "tls_no_shared_cipher").levelname == "WARNING"


def test_rsa_key_exchange_only_client_is_refused(gateway, pki, caplog):
    context = client_context(
        pki, pki.device, maximum=ssl.TLSVersion.TLSv1_2, ciphers="AES128-GCM-SHA256"
    )
    with pytest.raises((ssl.SSLError, ConnectionError)):
        RawClient(gateway.port, context, timeout=5)
    assert wait_for_log(caplog, "tls_no_shared_cipher").levelname == "WARNING"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls12_and_tls13_are_accepted_with_aead(gateway, pki, caplog, version):
    client = RawClient(
        gateway.port, client_context(pki, pki.device, minimum=version, maximum=version)
    )
    try:
        assert client.connect(DEVICE_SERIAL).reason_code == mqtt5.ConnAckReasonCode.SUCCESS
        name, protocol, _bits = client.sock.cipher()
        assert protocol == ("TLSv1.2" if version == ssl.TLSVersion.TLSv1_2 else "TLSv1.3")
        assert "GCM" in name or "CHACHA20" in name
        if version == ssl.TLSVersion.TLSv1_2:
            assert name.startswith("ECDHE-ECDSA-")
    finally:
        client.close()
    record = wait_for_log(caplog, "tls_established")
    assert f"CN={DEVICE_SERIAL}" in record.getMessage()
    assert "sha256=" in record.getMessage()


def test_revoked_certificate_refuses_the_next_handshake(gateway, pki, caplog):
    fingerprint = certificate_fingerprint(pki.device.certificate)
    gateway.sync(lambda: gateway.authority.revoke(fingerprint))
    client = RawClient(gateway.port, client_context(pki, pki.device))
    try:
        ack = client.connect(DEVICE_SERIAL)
        assert ack.reason_code == mqtt5.ConnAckReasonCode.BAD_USER_NAME_OR_PASSWORD
        assert ack.reason_str == "certificate_revoked"
        assert client.wait_closed() == []
    finally:
        client.close()
    assert wait_for_log(caplog, "certificate_revoked").levelname == "WARNING"


def test_disabled_device_is_refused_with_not_authorized(gateway, pki, caplog):
    gateway.sync(lambda: gateway.authority.disable(DEVICE_SERIAL))
    client = RawClient(gateway.port, client_context(pki, pki.device))
    try:
        ack = client.connect(DEVICE_SERIAL)
        assert ack.reason_code == mqtt5.ConnAckReasonCode.NOT_AUTHORIZED
        assert client.wait_closed() == []
    finally:
        client.close()
    assert wait_for_log(caplog, "device_disabled").levelname == "WARNING"


def test_wrong_curve_is_a_profile_violation(gateway, pki, caplog, tmp_path):
    p384 = raw_leaf(
        pki.device_ca, DEVICE_SERIAL, key=ec.generate_private_key(ec.SECP384R1())
    ).write(tmp_path, "p384")
    client = RawClient(gateway.port, client_context(pki, p384))
    try:
        ack = client.connect(DEVICE_SERIAL)
        assert ack.reason_code == mqtt5.ConnAckReasonCode.BAD_USER_NAME_OR_PASSWORD
        assert client.wait_closed() == []
    finally:
        client.close()
    assert wait_for_log(caplog, "profile_violation").levelname == "WARNING"


def test_reload_trust_applies_to_the_next_handshake(gateway, pki, caplog):
    client = RawClient(gateway.port, client_context(pki, pki.service))
    try:
        assert client.connect(SERVICE_NAME).reason_code == mqtt5.ConnAckReasonCode.SUCCESS
    finally:
        client.close()
    # The service CA is no longer registered: new handshakes no longer trust it.
    narrower = StaticAuthority(device_cas=[pki.device_ca.certificate])

    def swap() -> None:
        gateway.gateway.authority = narrower
        gateway.gateway.reload_trust()

    gateway.sync(swap)
    assert_refused_at_tls(gateway.port, client_context(pki, pki.service))
    assert wait_for_log(caplog, "ca_not_registered").levelname == "WARNING"
    device = RawClient(gateway.port, client_context(pki, pki.device))
    try:
        assert device.connect(DEVICE_SERIAL).reason_code == mqtt5.ConnAckReasonCode.SUCCESS
    finally:
        device.close()
