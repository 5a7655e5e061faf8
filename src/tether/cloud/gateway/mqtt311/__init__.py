"""MQTT 3.1.1 for the devices whose libraries speak nothing newer (PubSubClient, lwmqtt, ...).

``packets`` holds the value objects, ``codec`` turns them into bytes and back (sans-I/O, one
error type). The session picks this codec or ``mqtt5`` per connection from the CONNECT's
protocol level (:func:`tether.cloud.gateway.framing.connect_protocol`).
"""

from tether.cloud.gateway.mqtt311.codec import Mqtt311MalformedError, decode, encode

__all__ = ["Mqtt311MalformedError", "decode", "encode"]
