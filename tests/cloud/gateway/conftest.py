"""Fixtures: one test PKI per session, a fresh gateway (and authority) per test."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from tests.cloud.gateway.harness import GatewayThread
from tests.cloud.gateway.pki import GatewayPKI, build_test_pki
from tether.cloud.gateway import GatewaySettings, StaticAuthority


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> GatewayPKI:
    return build_test_pki(tmp_path_factory.mktemp("gateway-pki"))


def make_settings(pki: GatewayPKI, **overrides: object) -> GatewaySettings:
    values: dict[str, object] = {
        "certificate_chain": pki.server.cert_path,
        "private_key": pki.server.key_path,
        "host": "127.0.0.1",
        "port": 0,
        "connect_timeout": 5.0,
        "max_packet_size": 16 * 1024,
        "write_buffer_limit": 64 * 1024,
    }
    values.update(overrides)
    return GatewaySettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def authority(pki: GatewayPKI) -> StaticAuthority:
    return StaticAuthority(
        device_cas=[pki.device_ca.certificate], service_cas=[pki.service_ca.certificate]
    )


@pytest.fixture
def gateway(
    pki: GatewayPKI, authority: StaticAuthority, caplog: pytest.LogCaptureFixture
) -> Iterator[GatewayThread]:
    caplog.set_level(logging.INFO, logger="tether.gateway")
    running = GatewayThread(make_settings(pki), authority)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def gateway_factory(
    pki: GatewayPKI, authority: StaticAuthority, caplog: pytest.LogCaptureFixture
) -> Iterator[Callable[..., GatewayThread]]:
    """Start a gateway with settings overridden (e.g. a short connect timeout)."""
    caplog.set_level(logging.INFO, logger="tether.gateway")
    started: list[GatewayThread] = []

    def start(**overrides: object) -> GatewayThread:
        running = GatewayThread(make_settings(pki, **overrides), authority)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            running.close()
