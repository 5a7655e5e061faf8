"""Random bytes after TLS never crash the gateway: it keeps serving the next client."""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Iterator

import mqtt5
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cloud.gateway.conftest import make_settings
from tests.cloud.gateway.harness import GatewayThread, client_context
from tests.cloud.gateway.pki import DEVICE_SERIAL, GatewayPKI
from tests.support.mqtt import RawClient
from tether.cloud.gateway import StaticAuthority

MAX_PACKET = 16 * 1024


@pytest.fixture(scope="module")
def shared_gateway(pki: GatewayPKI) -> Iterator[GatewayThread]:
    authority = StaticAuthority(device_cas=[pki.device_ca.certificate])
    # Hypothesis runs many examples; keep the per-example log volume down.
    logging.getLogger("tether.gateway").setLevel(logging.ERROR)
    running = GatewayThread(make_settings(pki, connect_timeout=2.0), authority)
    try:
        yield running
    finally:
        running.close()
        logging.getLogger("tether.gateway").setLevel(logging.NOTSET)


def still_serving(running: GatewayThread, pki: GatewayPKI) -> None:
    client = RawClient(running.port, client_context(pki, pki.device), timeout=5)
    try:
        assert client.connect(DEVICE_SERIAL).reason_code == mqtt5.ConnAckReasonCode.SUCCESS
        client.send(mqtt5.PingReqPacket())
        assert isinstance(client.recv(timeout=5), mqtt5.PingRespPacket)
    finally:
        client.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    connect_first=st.booleans(),
    chunks=st.lists(
        st.one_of(
            st.binary(min_size=1, max_size=300),
            # Plausible headers followed by junk reach deeper into the codec.
            st.builds(
                lambda kind, body: bytes([kind, min(len(body), 127)]) + body,
                st.integers(0, 255),
                st.binary(max_size=127),
            ),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_random_bytes_never_crash_the_gateway(shared_gateway, pki, connect_first, chunks):
    client = RawClient(shared_gateway.port, client_context(pki, pki.device), timeout=5)
    try:
        if connect_first:
            assert client.connect(DEVICE_SERIAL).reason_code == 0
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            for chunk in chunks:
                client.send(chunk)
            # Whatever comes back must decode, and the connection ends or stays sane.
            for _ in range(5):
                if client.recv(timeout=0.2) is None:
                    break
    finally:
        client.close()
    # Buffers stay bounded: no live session holds more than one packet's worth.
    buffered = shared_gateway.sync(
        lambda: [s._stream.framer.buffered for s in shared_gateway.gateway._live]
    )
    assert all(size < MAX_PACKET for size in buffered)
    still_serving(shared_gateway, pki)


def test_a_flood_of_bytes_is_cut_off_and_the_gateway_keeps_serving(shared_gateway, pki):
    client = RawClient(shared_gateway.port, client_context(pki, pki.device), timeout=5)
    try:
        assert client.connect(DEVICE_SERIAL).reason_code == 0
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            # A PUBLISH header announcing 1 MiB, then the bytes: refused after the header.
            client.send(bytes([0x30, 0x80, 0x80, 0x40]) + b"\xaa" * (1024 * 1024))
        seen = client.wait_closed(timeout=5)
    finally:
        client.close()
    assert [p.reason_code for p in seen] == [mqtt5.DisconnectReasonCode.PACKET_TOO_LARGE]
    still_serving(shared_gateway, pki)
