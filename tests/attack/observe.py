"""What an attacker's client sees, and which reason code the gateway logged for it.

The attack matrix compares both against a case's expectation. Clients are real: stdlib
``ssl`` sockets speaking MQTT 5 through the ``mqtt5`` codec, and awscrt for the key that is
not the certificate's. Every read has a timeout.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import mqtt5
import pytest

from tether.cloud.gateway.framing import PacketFramer

TIMEOUT = 5.0


@dataclass(frozen=True)
class Observation:
    """``kind`` is matched against the expectation (``tls``, ``connack:0x86``...); ``detail``
    is what the client saw in words; ``code`` is the reason code that was logged."""

    kind: str
    detail: str
    code: str


class Wire:
    """A TLS connection to the gateway that reports alerts instead of hiding them."""

    def __init__(self, port: int, context: ssl.SSLContext, *, timeout: float = TIMEOUT) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            self.sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
        except BaseException:
            raw.close()
            raise
        self.framer = PacketFramer(1024 * 1024)
        self.alert: str | None = None

    def send(self, packet: bytes | Any) -> None:
        self.sock.sendall(packet if isinstance(packet, bytes) else packet.write())

    def recv(self, timeout: float = TIMEOUT) -> Any | None:
        """The next packet; ``None`` when the gateway closed (``alert`` says how)."""
        deadline = time.monotonic() + timeout
        while True:
            packet = self.framer.next_packet()
            if packet is not None:
                return packet
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("the gateway neither answered nor closed in time")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except ssl.SSLError as exc:
                self.alert = exc.reason or type(exc).__name__
                return None
            except ConnectionError as exc:
                self.alert = type(exc).__name__
                return None
            if not data:
                return None
            self.framer.feed(data)

    def until_closed(self, timeout: float = TIMEOUT) -> list[Any]:
        """Every packet until the gateway closes the connection."""
        seen = []
        deadline = time.monotonic() + timeout
        while (packet := self.recv(max(deadline - time.monotonic(), 0.01))) is not None:
            seen.append(packet)
        return seen

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def describe(packet: Any) -> tuple[str, str]:
    """(kind, words) for a packet the gateway sent."""
    if packet is None:
        return "closed", "connection closed"
    name = type(packet).__name__.removesuffix("Packet").upper()
    if isinstance(packet, mqtt5.SubAckPacket):
        codes = ",".join(f"0x{int(c):02x}" for c in packet.reason_codes)
        return f"suback:{codes}", f"SUBACK {codes}"
    code = getattr(packet, "reason_code", None)
    if code is None:
        return name.lower(), name
    reason = getattr(packet, "reason_str", None)
    text = f"{name} 0x{int(code):02x}" + (f" ({reason})" if reason else "")
    return f"{name.lower()}:0x{int(code):02x}", text


def connect_attempt(port: int, context: ssl.SSLContext, client_id: str) -> tuple[str, str]:
    """TLS handshake then CONNECT; (kind, words) of how it ended.

    A TLS refusal is kind ``tls`` whether it shows in the handshake (TLS 1.2) or, with TLS
    1.3 where the client finishes first, as an alert on the first read.
    """
    try:
        wire = Wire(port, context)
    except ssl.SSLError as exc:
        return "tls", f"handshake failed ({exc.reason or type(exc).__name__})"
    except ConnectionError as exc:
        return "tls", f"handshake failed ({type(exc).__name__})"
    try:
        try:
            wire.send(mqtt5.ConnectPacket(client_id, clean_start=True))
        except (ssl.SSLError, ConnectionError) as exc:
            return "tls", f"refused after the handshake ({type(exc).__name__})"
        packet = wire.recv()
        if packet is None:
            how = f"alert {wire.alert}" if wire.alert else "closed"
            return "tls", f"TLS 1.3: {how} right after the client's Finished, no CONNACK"
        kind, words = describe(packet)
        rest = wire.until_closed()
        return kind, words + ("; then closed" if not rest else f"; then {rest}")
    finally:
        wire.close()


def gateway_codes(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    """The ``tether_code`` of every captured gateway record at ``level`` or above, in order."""
    return [
        str(record.tether_code)  # type: ignore[attr-defined]
        for record in list(caplog.records)
        if record.levelno >= level and getattr(record, "tether_code", None)
    ]


def logged_code(
    caplog: pytest.LogCaptureFixture, expected: Iterable[str], timeout: float = TIMEOUT
) -> str:
    """The first expected code that appears in the log (it may come late); else what did."""
    wanted = set(expected)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for code in gateway_codes(caplog, logging.DEBUG):
            if code in wanted:
                return code
        time.sleep(0.02)
    seen = gateway_codes(caplog)
    return "none logged" if not seen else "/".join(dict.fromkeys(seen))


def wait_future(future: Future[Any], timeout: float) -> Any:
    return future.result(timeout)
