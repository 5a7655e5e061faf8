"""MQTT 5 test clients, written once: a raw one packet by packet, and paho for the real thing.

``RawClient`` speaks MQTT 5 through the ``mqtt5`` codec over a stdlib ``ssl`` socket, so a
test sees exactly what the gateway sent (a CONNACK's reason code, a DISCONNECT, a TLS alert,
the connection closing) and can send what no library would. ``AsyncRawClient`` is the same
over asyncio streams, for load tests that hold many connections at once. Both frame what
they read with the gateway's own bounded ``PacketFramer``. ``paho_connect`` is paho-mqtt v2
(MQTT 5) with its callbacks turned into queues. Every read has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import mqtt5
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.pki import Issued
from tether.cloud.gateway.framing import PacketFramer
from tether.cloud.gateway.framing import decode as decode_mqtt5

TIMEOUT = 10.0
MAX_PACKET = 1024 * 1024


class HasKeyFiles(Protocol):
    """Anything with a certificate file and its key file (an ``Issued``, a ``KeyFiles``...)."""

    @property
    def cert_path(self) -> Path: ...

    @property
    def key_path(self) -> Path: ...


@dataclass(frozen=True)
class KeyFiles:
    """A certificate file and its key file, when a test has only the paths."""

    cert_path: Path
    key_path: Path


def tls_context(
    pinned_ca: Path,
    identity: HasKeyFiles | None = None,
    *,
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A client context trusting only ``pinned_ca``, presenting ``identity`` (or nothing)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=pinned_ca)
    if ciphers is not None:
        context.set_ciphers(ciphers)
    context.minimum_version = minimum
    context.maximum_version = maximum
    if identity is not None:
        context.load_cert_chain(identity.cert_path, identity.key_path)
    return context


class RawClient:
    """A TLS connection to the gateway, packet by packet, that reports alerts, not hides them."""

    def __init__(
        self,
        port: int,
        context: ssl.SSLContext,
        *,
        timeout: float = TIMEOUT,
        receive_buffer: int | None = None,
        source: str | None = None,
        decode: Callable[[bytes], Any] = decode_mqtt5,
    ) -> None:
        """Connect and do the TLS handshake (its errors propagate); ``receive_buffer`` shrinks
        SO_RCVBUF first (a slow consumer whose kernel buffer fills quickly); ``source`` is the
        loopback address to connect from (``127.0.0.2``: another client address); ``decode``
        reads what comes back (``tether.cloud.gateway.mqtt311.decode`` for a 3.1.1 client)."""
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if source is not None:
                raw.bind((source, 0))
            if receive_buffer is not None:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            raw.settimeout(timeout)
            raw.connect(("127.0.0.1", port))
            self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        except BaseException:
            raw.close()
            raise
        self.framer = PacketFramer(MAX_PACKET)
        self._decode = decode
        self.alert: str | None = None  # why the connection ended, when TLS or TCP said so

    def send(self, packet: bytes | Any) -> None:
        self.sock.sendall(packet if isinstance(packet, bytes) else packet.write())

    def recv(self, timeout: float = TIMEOUT) -> Any | None:
        """The next packet; ``None`` when the gateway closed (``alert`` says how).

        Neither within ``timeout`` raises ``TimeoutError`` (an ``OSError``, as a socket's).
        """
        deadline = time.monotonic() + timeout
        while True:
            frame = self.framer.next_frame()
            if frame is not None:
                return self._decode(frame)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the gateway neither answered nor closed in time")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except ssl.SSLError as exc:
                self.alert = exc.reason or type(exc).__name__
                return None
            except ConnectionError as exc:
                self.alert = type(exc).__name__
                return None
            except TimeoutError:
                continue  # the deadline check above raises
            if not data:
                return None
            self.framer.feed(data)

    def connect(self, client_id: str, **kwargs: Any) -> Any:
        """CONNECT (clean start) and the gateway's answer (``None`` if it closed)."""
        self.send(mqtt5.ConnectPacket(client_id, clean_start=True, **kwargs))
        return self.recv()

    def wait_closed(self, timeout: float = TIMEOUT) -> list[Any]:
        """Read until the gateway closes; return every packet seen on the way."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                packet = self.recv(max(deadline - time.monotonic(), 0.01))
            except TimeoutError:
                raise AssertionError(f"gateway did not close the connection; saw {seen}") from None
            if packet is None:
                return seen
            seen.append(packet)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class AsyncRawClient:
    """One MQTT 5 connection over asyncio streams, packet by packet (for many at once)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.framer = PacketFramer(MAX_PACKET)

    @classmethod
    async def open(
        cls, port: int, context: ssl.SSLContext, timeout: float = TIMEOUT
    ) -> AsyncRawClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"),
            timeout,
        )
        return cls(reader, writer, timeout)

    async def send(self, packet: Any) -> None:
        self.writer.write(packet if isinstance(packet, bytes) else packet.write())
        await self.writer.drain()

    async def recv(self) -> Any:
        """The next packet; the gateway closing raises ``ConnectionError``."""
        while (packet := self.framer.next_packet()) is None:
            data = await asyncio.wait_for(self.reader.read(65536), self.timeout)
            if not data:
                raise ConnectionError("the gateway closed the connection")
            self.framer.feed(data)
        return packet

    async def connect(self, client_id: str) -> Any:
        """CONNECT (clean start) and the gateway's answer."""
        await self.send(mqtt5.ConnectPacket(client_id, clean_start=True))
        return await self.recv()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)


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
    """PUBLISH properties carrying ``user`` as MQTT 5 user properties."""
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = list(user.items())
    return properties
