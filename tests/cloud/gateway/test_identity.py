"""StaticAuthority, the profile check, settings and TLS configuration errors."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.cloud.gateway.conftest import make_settings
from tests.cloud.gateway.pki import DEVICE_SERIAL, SERVICE_NAME
from tests.support.pki import raw_ca, raw_leaf
from tether.cloud.gateway import (
    Gateway,
    GatewaySettings,
    HandshakeRefused,
    IdentityAuthority,
    IdentityKind,
    StaticAuthority,
    certificate_fingerprint,
)
from tether.cloud.gateway.errors import GatewayConfigurationError
from tether.cloud.gateway.tls import build_server_context
from tether.errors import ConfigurationError, InvalidInputError, PermissionDeniedError


def authorize(authority: StaticAuthority, leaf):
    return asyncio.run(authority.authorize(leaf))


def refusal(authority: StaticAuthority, leaf) -> str:
    with pytest.raises(HandshakeRefused) as caught:
        authorize(authority, leaf)
    assert isinstance(caught.value, PermissionDeniedError)
    return caught.value.code


def test_static_authority_is_an_identity_authority(authority):
    assert isinstance(authority, IdentityAuthority)


def test_kind_comes_from_the_issuing_ca(authority, pki):
    device = authorize(authority, pki.device.certificate)
    service = authorize(authority, pki.service.certificate)
    assert (device.kind, device.name) == (IdentityKind.DEVICE, DEVICE_SERIAL)
    assert (service.kind, service.name) == (IdentityKind.SERVICE, SERVICE_NAME)
    assert device.certificate_fingerprint == certificate_fingerprint(pki.device.certificate)
    assert device.issuer == "CN=Tether Test Device CA"


def test_a_matching_issuer_name_without_the_signature_is_not_enough(authority, pki, tmp_path):
    lookalike = raw_ca("Tether Test Device CA").write(tmp_path, "lookalike")
    forged = raw_leaf(lookalike, DEVICE_SERIAL).write(tmp_path, "forged")
    assert forged.certificate.issuer == pki.device_ca.certificate.subject
    assert refusal(authority, forged.certificate) == "ca_not_registered"


def test_revoke_and_disable(authority, pki):
    authority.revoke(certificate_fingerprint(pki.device.certificate).upper())
    assert refusal(authority, pki.device.certificate) == "certificate_revoked"
    authority.disable(SERVICE_NAME)
    assert refusal(authority, pki.service.certificate) == "service_disabled"
    authority.enable(SERVICE_NAME)
    assert authorize(authority, pki.service.certificate).name == SERVICE_NAME


def test_disabled_device(authority, pki):
    authority.disable(DEVICE_SERIAL)
    assert refusal(authority, pki.device.certificate) == "device_disabled"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"key": ec.generate_private_key(ec.SECP384R1())}, "profile_violation"),
        ({"client_auth": False}, "profile_violation"),
        ({"not_after": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)}, "certificate_expired"),
    ],
)
def test_profile_violations(authority, pki, tmp_path, kwargs, code):
    leaf = raw_leaf(pki.device_ca, DEVICE_SERIAL, **kwargs).write(tmp_path, "bad")
    assert refusal(authority, leaf.certificate) == code


@pytest.mark.parametrize("name", ["devices/SN1", "SN+1", "#", "a b", "-lead"])
def test_names_that_could_be_topic_paths_are_refused(authority, pki, tmp_path, name):
    leaf = raw_leaf(pki.device_ca, name).write(tmp_path, "named")
    assert refusal(authority, leaf.certificate) == "profile_violation"


def test_a_leaf_is_not_a_ca(pki):
    with pytest.raises(InvalidInputError) as caught:
        StaticAuthority(device_cas=[pki.device.certificate])
    assert caught.value.code == "gateway_not_a_ca"


def test_one_ca_cannot_serve_both_roles(pki):
    with pytest.raises(InvalidInputError) as caught:
        StaticAuthority(
            device_cas=[pki.device_ca.certificate], service_cas=[pki.device_ca.certificate]
        )
    assert caught.value.code == "gateway_ca_role_conflict"


@pytest.mark.parametrize(
    "overrides",
    [{"port": 70000}, {"connect_timeout": 0}, {"max_packet_size": 10}, {"max_keep_alive": 0}],
)
def test_invalid_settings_are_refused(pki, overrides):
    with pytest.raises(ConfigurationError) as caught:
        make_settings(pki, **overrides)
    assert caught.value.code == "gateway_invalid_settings"


def test_unreadable_server_credentials_are_a_configuration_error(pki, tmp_path):
    with pytest.raises(GatewayConfigurationError) as caught:
        build_server_context(
            certificate_chain=tmp_path / "missing.pem",
            private_key=pki.server.key_path,
            trusted_cas=[],
        )
    assert caught.value.code == "gateway_tls_credentials"
    with pytest.raises(GatewayConfigurationError):
        build_server_context(
            certificate_chain=pki.server.cert_path,
            private_key=pki.device.key_path,  # does not match the certificate
            trusted_cas=[],
        )


def test_port_in_use_is_a_configuration_error(gateway, pki, authority):
    second = Gateway(make_settings(pki, port=gateway.port), authority)
    with pytest.raises(GatewayConfigurationError) as caught:
        gateway.call(second.start())
    assert caught.value.code == "gateway_bind_failed"


def test_settings_are_frozen(pki):
    settings = GatewaySettings(certificate_chain=Path("a"), private_key=Path("b"))
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]
    assert settings.port == 8883 and settings.connect_timeout == 5.0
    assert settings.handshake_timeout < settings.connect_timeout
