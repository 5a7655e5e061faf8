"""Run a real gateway on its own event loop thread; TLS contexts and tool arguments for it.

The tests are synchronous (paho, mosquitto, raw ``ssl`` sockets: ``tests.support.mqtt``); the
gateway runs on its own event loop thread (``tether.cloud.loop_thread``), exactly as in
production. Everything has a timeout.
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any

import pytest

from tests.cloud.gateway.pki import GatewayPKI
from tests.support.mqtt import tls_context
from tests.support.pki import Issued
from tether.cloud.bus import Bus
from tether.cloud.gateway import Gateway, GatewaySettings, StaticAuthority
from tether.cloud.loop_thread import LoopThread

TIMEOUT = 10.0


class GatewayThread(LoopThread):
    """A started ``Gateway`` on its own event loop thread."""

    def __init__(
        self, settings: GatewaySettings, authority: StaticAuthority, *, bus: Bus | None = None
    ) -> None:
        super().__init__("gateway-test", timeout=TIMEOUT)
        self.authority = authority
        self.gateway = Gateway(settings, authority, bus=bus)
        self.port = self.call(self.gateway.start())

    def shutdown(self) -> None:
        self.call(self.gateway.stop(), timeout=15)


def client_context(pki: GatewayPKI, client: Issued | None, **tls: Any) -> ssl.SSLContext:
    """``tests.support.mqtt.tls_context`` trusting the gateway test root."""
    return tls_context(pki.root.cert_path, client, **tls)


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
