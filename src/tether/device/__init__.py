"""The device agent: an awscrt MQTT 5 client over mutual TLS, pinned to one cloud CA.

The key is either in a PKCS#11 token (the real case: the handshake signature is made inside
the secure element) or in a file (the software emulator). ``DeviceClient`` is the sync API;
``explain`` turns a connection into the five handshake steps with real values.
"""

from __future__ import annotations

from tether.device.config import CloudEndpoint, DeviceIdentity, FileKey, KeySource, Pkcs11Key
from tether.device.connection import (
    ConnectResult,
    DeviceClient,
    PubAckResult,
    ReceivedMessage,
    SubAckResult,
)
from tether.device.tls import build_tls_context

__all__ = [
    "CloudEndpoint",
    "ConnectResult",
    "DeviceClient",
    "DeviceIdentity",
    "FileKey",
    "KeySource",
    "Pkcs11Key",
    "PubAckResult",
    "ReceivedMessage",
    "SubAckResult",
    "build_tls_context",
]
