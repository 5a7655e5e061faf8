"""Errors of the MQTT gateway, each under one of Tether's categories with a stable code.

``HandshakeRefused`` (the authority's verdict) lives in :mod:`tether.cloud.gateway.identity`
because it is part of the contract with the registry; the errors here are the gateway's own:
a broken configuration and a peer that does not speak MQTT (3.1.1 or 5) properly.
"""

from __future__ import annotations

from tether.errors import ConfigurationError, InvalidInputError


class GatewayConfigurationError(ConfigurationError):
    """The gateway cannot start: unreadable certificate or key, bad setting, port in use."""

    code = "gateway_configuration_error"


class MqttProtocolError(InvalidInputError):
    """A peer broke the MQTT protocol; the gateway answers DISCONNECT (MQTT 5) and closes."""

    code = "mqtt_protocol_error"


class MalformedPacketError(MqttProtocolError):
    """Bytes from a peer do not decode as an MQTT packet (MQTT 5: DISCONNECT 0x81)."""

    code = "mqtt_malformed_packet"


class PacketTooLargeError(MqttProtocolError):
    """A peer announced a packet bigger than the advertised maximum (DISCONNECT 0x95)."""

    code = "mqtt_packet_too_large"
