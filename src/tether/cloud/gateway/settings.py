"""The gateway's typed settings, read once by the CLI or the service and passed down.

Every bound an outsider could otherwise push on is here, with a default that is safe on a
small machine (2 cores, the default 1,024 file descriptors raised to the hard limit at start);
:mod:`tether.cloud.gateway.limits` counts how often each one acted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tether.cloud.gateway.errors import GatewayConfigurationError

MQTT_MAX_PACKET_SIZE = 268_435_455  # the largest remaining length MQTT can encode, plus header
MQTT_MAX_KEEP_ALIVE = 65_535
MQTT_MAX_RECEIVE_MAXIMUM = 65_535

# The settings that bound what a client can make the gateway hold or do: reported with the
# counters by ``Gateway.limits_report()``.
LIMIT_SETTINGS = (
    "connect_timeout",
    "handshake_timeout",
    "max_packet_size",
    "max_keep_alive",
    "write_buffer_limit",
    "max_connections",
    "max_pending_connections",
    "max_pending_per_address",
    "max_filters_per_subscribe",
    "max_subscriptions_per_session",
    "quota_backoff",
    "receive_maximum",
    "max_queued_messages",
    "max_queued_bytes",
    "verdict_threads",
    "max_inflight_messages",
    "topic_alias_maximum",
    "max_retained_per_subscribe",
)


@dataclass(frozen=True)
class GatewaySettings:
    """Where the gateway listens, with which certificate, and its protocol limits.

    ``certificate_chain`` is the PEM server certificate followed by its issuing CA;
    ``private_key`` its PEM key. ``connect_timeout`` bounds TCP accept -> TLS handshake ->
    authority verdict -> CONNECT. ``max_packet_size`` is advertised in CONNACK and enforced on
    every packet read. A client keep-alive of 0 or above ``max_keep_alive`` is replaced by
    ``max_keep_alive`` (sent as Server Keep Alive): no connection may stay silent for ever.
    ``write_buffer_limit`` bounds the bytes written to one slow subscriber's socket buffer.

    Connections (see :mod:`tether.cloud.gateway.server`): ``handshake_timeout`` bounds TCP
    accept -> TLS handshake done (unauthenticated time, so shorter than ``connect_timeout``);
    ``max_connections`` bounds all open connections; ``max_pending_connections`` those that
    have not had their CONNECT accepted yet (a new one evicts the oldest still in its TLS
    handshake), ``max_pending_per_address`` those per source address (a new one is refused).

    Sessions (see :mod:`tether.cloud.gateway.limits` and :mod:`tether.cloud.gateway.flow`):
    ``max_filters_per_subscribe`` and ``max_subscriptions_per_session`` (beyond them SUBACK
    says 0x97 Quota exceeded for the filters over the limit, and the session's next packet is
    read only after ``quota_backoff`` seconds); ``receive_maximum`` is the
    server's Receive Maximum in CONNACK; QoS 1 messages beyond the client's Receive Maximum
    wait in a queue of at most ``max_queued_messages`` messages and ``max_queued_bytes``
    bytes (overflow: DISCONNECT 0x97). ``verdict_threads`` sizes the thread pool that runs
    the authority's verdicts and nothing else.

    ``max_inflight_messages`` is the outgoing QoS 1/2 window of an MQTT 3.1.1 client (it
    announces no Receive Maximum; beyond the window messages wait as above);
    ``topic_alias_maximum`` is the Topic Alias Maximum in CONNACK: how many inbound topic
    aliases one MQTT 5 session may set (0 refuses them); ``max_retained_per_subscribe``
    bounds the retained messages one new filter is sent.
    """

    certificate_chain: Path
    private_key: Path
    host: str = "127.0.0.1"
    port: int = 8883
    connect_timeout: float = 5.0
    max_packet_size: int = 256 * 1024
    max_keep_alive: int = 1200
    reuse_port: bool = False
    write_buffer_limit: int = 1024 * 1024
    backlog: int = 1024
    handshake_timeout: float = 3.0
    max_connections: int = 10_000
    max_pending_connections: int = 1024
    max_pending_per_address: int = 128
    max_filters_per_subscribe: int = 32
    max_subscriptions_per_session: int = 256
    quota_backoff: float = 1.0
    receive_maximum: int = 64
    max_queued_messages: int = 1000
    max_queued_bytes: int = 1024 * 1024
    verdict_threads: int = 4
    max_inflight_messages: int = 20
    topic_alias_maximum: int = 16
    max_retained_per_subscribe: int = 100

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
        if self.max_queued_bytes < self.max_packet_size:
            problems.append("max_queued_bytes must be at least max_packet_size")
        if not 0 <= self.quota_backoff <= 60:
            problems.append("quota_backoff must be in 0..60 seconds")
        if not self.handshake_timeout > 0:
            problems.append("handshake_timeout must be positive")
        if not 1 <= self.receive_maximum <= MQTT_MAX_RECEIVE_MAXIMUM:
            problems.append(f"receive_maximum must be in 1..{MQTT_MAX_RECEIVE_MAXIMUM}")
        if not 0 <= self.topic_alias_maximum <= 65_535:
            problems.append("topic_alias_maximum must be in 0..65535")
        if not 1 <= self.max_inflight_messages <= 65_535:
            problems.append("max_inflight_messages must be in 1..65535")
        for name in (
            "max_connections",
            "max_pending_connections",
            "max_pending_per_address",
            "max_filters_per_subscribe",
            "max_subscriptions_per_session",
            "max_queued_messages",
            "verdict_threads",
            "max_retained_per_subscribe",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if problems:
            raise GatewayConfigurationError(
                "Invalid gateway settings: " + "; ".join(problems) + ".",
                code="gateway_invalid_settings",
            )
