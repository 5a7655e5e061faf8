"""The gateway's typed settings, read once by the CLI or the service and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tether.cloud.gateway.errors import GatewayConfigurationError

MQTT_MAX_PACKET_SIZE = 268_435_455  # the largest remaining length MQTT can encode, plus header
MQTT_MAX_KEEP_ALIVE = 65_535


@dataclass(frozen=True)
class GatewaySettings:
    """Where the gateway listens, with which certificate, and its protocol limits.

    ``certificate_chain`` is the PEM server certificate followed by its issuing CA;
    ``private_key`` its PEM key. ``connect_timeout`` bounds TCP accept -> TLS handshake ->
    authority verdict -> CONNECT. ``max_packet_size`` is advertised in CONNACK and enforced on
    every packet read. A client keep-alive of 0 or above ``max_keep_alive`` is replaced by
    ``max_keep_alive`` (sent as Server Keep Alive): no connection may stay silent for ever.
    ``write_buffer_limit`` bounds the bytes queued to one slow subscriber; messages beyond it
    are dropped for that subscriber.
    """

    certificate_chain: Path
    private_key: Path
    host: str = "127.0.0.1"
    port: int = 8883
    connect_timeout: float = 10.0
    max_packet_size: int = 256 * 1024
    max_keep_alive: int = 1200
    reuse_port: bool = False
    write_buffer_limit: int = 1024 * 1024
    backlog: int = 1024

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.port <= 65_535:
            problems.append(f"port {self.port} is not in 0..65535")
        if not self.connect_timeout > 0:
            problems.append("connect_timeout must be positive")
        if not 64 <= self.max_packet_size <= MQTT_MAX_PACKET_SIZE:
            problems.append(f"max_packet_size must be in 64..{MQTT_MAX_PACKET_SIZE}")
        if not 1 <= self.max_keep_alive <= MQTT_MAX_KEEP_ALIVE:
            problems.append(f"max_keep_alive must be in 1..{MQTT_MAX_KEEP_ALIVE}")
        if self.write_buffer_limit < self.max_packet_size:
            problems.append("write_buffer_limit must be at least max_packet_size")
        if problems:
            raise GatewayConfigurationError(
                "Invalid gateway settings: " + "; ".join(problems) + ".",
                code="gateway_invalid_settings",
            )
