"""The MQTT 5 mutual-TLS gateway: devices and services connect here with their certificates.

Layers, bottom up: ``topics`` (filter syntax and matching), ``topictree`` (which filters
match a topic), ``policy`` (who may use which topic), ``framing`` and ``streams`` (bounded
packet reads over the ``mqtt5`` codec), ``broker`` (in-process routing), ``limits`` (the
bounds' counters and report), ``subscriptions`` (SUBSCRIBE: syntax, policy, quotas),
``flow`` (outgoing Receive Maximum and slow-consumer bounds), ``session`` (one client's MQTT
state machine), ``tls`` (the server context), ``server`` (listener, connection caps,
verdicts, session table). ``identity`` is the contract with the registry: the
``IdentityAuthority`` decides who a certificate is.
"""

from tether.cloud.gateway.identity import (
    HandshakeRefused,
    Identity,
    IdentityAuthority,
    IdentityKind,
    StaticAuthority,
    certificate_fingerprint,
    check_client_profile,
)
from tether.cloud.gateway.limits import LimitCode, LimitsReport
from tether.cloud.gateway.policy import DefaultPolicy, TopicPolicy
from tether.cloud.gateway.server import Gateway, run
from tether.cloud.gateway.settings import GatewaySettings

__all__ = [
    "DefaultPolicy",
    "Gateway",
    "GatewaySettings",
    "HandshakeRefused",
    "Identity",
    "IdentityAuthority",
    "IdentityKind",
    "LimitCode",
    "LimitsReport",
    "StaticAuthority",
    "TopicPolicy",
    "certificate_fingerprint",
    "check_client_profile",
    "run",
]
