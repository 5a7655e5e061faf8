"""What an attacker's client sees, and which reason code the gateway logged for it.

The attack matrix compares both against a case's expectation. Clients are real: the raw
MQTT 5 client of ``tests.support.mqtt`` (stdlib ``ssl`` and the ``mqtt5`` codec), and awscrt
for the key that is not the certificate's. Every read has a timeout.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import mqtt5
import pytest

from tests.support.mqtt import RawClient

TIMEOUT = 5.0


@dataclass(frozen=True)
class Observation:
    """``kind`` is matched against the expectation (``tls``, ``connack:0x86``...); ``detail``
    is what the client saw in words; ``code`` is the reason code that was logged."""

    kind: str
    detail: str
    code: str


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
        wire = RawClient(port, context, timeout=TIMEOUT)
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
        rest = wire.wait_closed()
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
