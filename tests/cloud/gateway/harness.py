"""Run a real gateway on a uvloop loop in a background thread, and real clients against it.

The tests are synchronous (paho, mosquitto, raw ``ssl`` sockets); the gateway runs on its own
event loop thread, exactly as in production. Everything has a timeout.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import mqtt5
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.cloud.gateway.pki import GatewayPKI
from tests.support.pki import Issued
from tether.cloud.gateway import Gateway, GatewaySettings, StaticAuthority
from tether.cloud.gateway.framing import PacketFramer
from tether.cloud.loop_thread import LoopThread

T = TypeVar("T")
TIMEOUT = 10.0


class GatewayThread(LoopThread):
    """A started ``Gateway`` on its own event loop thread."""

    def __init__(self, settings: GatewaySettings, authority: StaticAuthority) -> None:
        super().__init__("gateway-test", timeout=TIMEOUT)
        self.authority = authority
        self.gateway = Gateway(settings, authority)
        self.port = self.call(self.gateway.start())

    def shutdown(self) -> None:
        self.call(self.gateway.stop(), timeout=15)


def client_context(
    pki: GatewayPKI,
    client: Issued | None,
    *,
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A client context trusting the test root, presenting ``client`` (or no certificate)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=pki.root.cert_path)
    if ciphers is not None:
        context.set_ciphers(ciphers)
    context.minimum_version = minimum
    context.maximum_version = maximum
    if client is not None:
        context.load_cert_chain(client.cert_path, client.key_path)
    return context


class RawClient:
    """An MQTT 5 client over a plain ``ssl`` socket, packet by packet, for protocol tests."""

    def __init__(
        self,
        port: int,
        context: ssl.SSLContext,
        *,
        timeout: float = TIMEOUT,
        receive_buffer: int | None = None,
    ) -> None:
        """Connect and do the TLS handshake; ``receive_buffer`` shrinks SO_RCVBUF first (a
        slow consumer whose kernel buffer fills quickly)."""
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if receive_buffer is not None:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            raw.settimeout(timeout)
            raw.connect(("127.0.0.1", port))
            self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        except BaseException:
            raw.close()
            raise
        self.framer = PacketFramer(1024 * 1024)

    def send(self, data: bytes | Any) -> None:
        self.sock.sendall(data if isinstance(data, bytes) else data.write())

    def recv(self, timeout: float = TIMEOUT) -> Any | None:
        """The next packet, or ``None`` when the gateway closed the connection."""
        deadline = time.monotonic() + timeout
        while True:
            packet = self.framer.next_packet()
            if packet is not None:
                return packet
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(65536)
            except (ConnectionError, ssl.SSLError):
                return None
            if not data:
                return None
            self.framer.feed(data)

    def connect(self, client_id: str, **kwargs: Any) -> Any:
        self.send(mqtt5.ConnectPacket(client_id, clean_start=True, **kwargs))
        return self.recv()

    def wait_closed(self, timeout: float = TIMEOUT) -> list[Any]:
        """Read until the gateway closes; return every packet seen on the way."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            packet = self.recv(deadline - time.monotonic())
            if packet is None:
                return seen
            seen.append(packet)
        raise AssertionError(f"gateway did not close the connection; saw {seen}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


@dataclass
class PahoClient:
    """A connected paho-mqtt v2 MQTT 5 client whose messages land in a queue."""

    client: paho.Client
    messages: queue.Queue[paho.MQTTMessage] = field(default_factory=queue.Queue)
    connack: queue.Queue[Any] = field(default_factory=queue.Queue)
    disconnects: queue.Queue[Any] = field(default_factory=queue.Queue)
    subacks: queue.Queue[list[Any]] = field(default_factory=queue.Queue)

    def subscribe(self, topic: str, qos: int = 1) -> list[Any]:
        self.client.subscribe(topic, qos=qos)
        return self.subacks.get(timeout=TIMEOUT)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def paho_connect(port: int, pki: GatewayPKI, identity: Issued, client_id: str) -> PahoClient:
    """Connect paho with ``identity``'s certificate and wait for the CONNACK."""
    return paho_connect_pinned(port, pki.root.cert_path, identity, client_id)


def paho_connect_pinned(port: int, ca_path: Path, identity: Issued, client_id: str) -> PahoClient:
    """Connect paho trusting only ``ca_path``; a missing or failed CONNACK fails the test."""
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
    )
    client.tls_set(
        ca_certs=str(ca_path),
        certfile=str(identity.cert_path),
        keyfile=str(identity.key_path),
    )
    wrapper = PahoClient(client)
    client.on_connect = lambda _c, _u, _f, reason, _p: wrapper.connack.put(reason)
    client.on_message = lambda _c, _u, message: wrapper.messages.put(message)
    client.on_disconnect = lambda _c, _u, _f, reason, _p: wrapper.disconnects.put(reason)
    client.on_subscribe = lambda _c, _u, _mid, codes, _p: wrapper.subacks.put(codes)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        reason = wrapper.connack.get(timeout=TIMEOUT)
    except queue.Empty:
        client.loop_stop()
        raise AssertionError("no CONNACK from the server") from None
    if reason.is_failure:
        client.loop_stop()
        raise AssertionError(f"paho connect failed: {reason}")
    return wrapper


def publish_properties(**user: str) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = list(user.items())
    return properties


def wait_for_log(
    caplog: pytest.LogCaptureFixture, code: str, timeout: float = TIMEOUT
) -> logging.LogRecord:
    """The first ``tether.gateway`` record with ``tether_code == code`` (it may come late)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in list(caplog.records):
            if getattr(record, "tether_code", None) == code:
                return record
        time.sleep(0.02)
    codes = [getattr(r, "tether_code", None) for r in caplog.records]
    raise AssertionError(f"no log record with code {code!r}; saw {codes}")


def mosquitto_args(pki: GatewayPKI, identity: Issued, port: int, client_id: str) -> list[str]:
    return [
        "-h", "127.0.0.1", "-p", str(port), "-V", "mqttv5", "-i", client_id,
        "--cafile", str(pki.root.cert_path),
        "--cert", str(identity.cert_path),
        "--key", str(identity.key_path),
    ]  # fmt: skip
