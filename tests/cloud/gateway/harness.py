"""Run a real gateway on a uvloop loop in a background thread, and real clients against it.

The tests are synchronous (paho, mosquitto, raw ``ssl`` sockets); the gateway runs on its own
event loop thread, exactly as in production. Everything has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import mqtt5
import paho.mqtt.client as paho
import pytest
import uvloop
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.cloud.gateway.pki import GatewayPKI, Issued
from tether.cloud.bus import Bus
from tether.cloud.gateway import Gateway, GatewaySettings, StaticAuthority
from tether.cloud.gateway.framing import PacketFramer
from tether.cloud.gateway.framing import decode as decode_mqtt5

T = TypeVar("T")
TIMEOUT = 10.0


class GatewayThread:
    """A started ``Gateway`` on a uvloop event loop in a daemon thread."""

    def __init__(
        self, settings: GatewaySettings, authority: StaticAuthority, *, bus: Bus | None = None
    ) -> None:
        self.authority = authority
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.gateway = Gateway(settings, authority, bus=bus)
        self.port = self.call(self.gateway.start())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = TIMEOUT) -> T:
        """Run a coroutine on the gateway's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sync(self, fn: Callable[[], T]) -> T:
        """Run a plain callable on the gateway's loop thread (the authority is not locked)."""

        async def wrapper() -> T:
            return fn()

        return self.call(wrapper())

    def close(self) -> None:
        """Stop the gateway and its loop; safe to call twice."""
        if self.loop.is_closed() or not self.thread.is_alive():
            return
        try:
            self.call(self.gateway.stop(), timeout=15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            if not self.thread.is_alive():
                self.loop.close()


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
    """An MQTT client over a plain ``ssl`` socket, packet by packet, for protocol tests."""

    def __init__(
        self,
        port: int,
        context: ssl.SSLContext,
        *,
        timeout: float = TIMEOUT,
        receive_buffer: int | None = None,
        decode: Callable[[bytes], Any] = decode_mqtt5,
    ) -> None:
        """Connect and do the TLS handshake; ``receive_buffer`` shrinks SO_RCVBUF first (a
        slow consumer whose kernel buffer fills quickly); ``decode`` reads what comes back
        (``tether.cloud.gateway.mqtt311.decode`` for a 3.1.1 client)."""
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
        self._decode = decode

    def send(self, data: bytes | Any) -> None:
        self.sock.sendall(data if isinstance(data, bytes) else data.write())

    def recv(self, timeout: float = TIMEOUT) -> Any | None:
        """The next packet, or ``None`` when the gateway closed the connection."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.framer.next_frame()
            if frame is not None:
                return self._decode(frame)
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


def paho_connect(
    port: int, pki: GatewayPKI, identity: Issued, client_id: str, protocol: int = paho.MQTTv5
) -> PahoClient:
    """Connect paho with ``identity``'s certificate and wait for the CONNACK."""
    return paho_connect_pinned(port, pki.root.cert_path, identity, client_id, protocol)


def paho_connect_pinned(
    port: int, ca_path: Path, identity: Issued, client_id: str, protocol: int = paho.MQTTv5
) -> PahoClient:
    """Connect paho trusting only ``ca_path``; a missing or failed CONNACK fails the test.

    ``protocol`` is ``paho.MQTTv5`` or ``paho.MQTTv311``.
    """
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
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


def mosquitto_args(
    pki: GatewayPKI, identity: Issued, port: int, client_id: str, version: str = "mqttv5"
) -> list[str]:
    """mosquitto_pub / mosquitto_sub arguments; ``version`` is ``mqttv5`` or ``mqttv311``."""
    return [
        "-h", "127.0.0.1", "-p", str(port), "-V", version, "-i", client_id,
        "--cafile", str(pki.root.cert_path),
        "--cert", str(identity.cert_path),
        "--key", str(identity.key_path),
    ]  # fmt: skip
