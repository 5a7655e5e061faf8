"""The MQTT 5 and 3.1.1 mutual-TLS gateway: devices and services connect with certificates.

Layers, bottom up: ``topics`` (filter syntax and matching), ``topictree`` (which filters
match a topic), ``policy`` (who may use which topic), ``rules`` (the identity rules both
versions apply), ``framing`` and ``streams`` (bounded frame reads; the ``mqtt5`` codec),
``mqtt311`` (our 3.1.1 codec), ``broker`` (in-process routing), ``senders`` (``$sender``
attribution views), ``limits`` (the bounds' counters and report), ``subscriptions`` (one
session's filters: syntax, policy, quotas, identifiers), ``flow`` and ``outbox`` (outgoing
Receive Maximum and slow-consumer bounds), ``exactly_once`` (incoming QoS 2), ``aliases``
(MQTT 5 topic aliases), ``shared`` (``$share`` groups), ``stores``, ``retained`` and
``persistence`` (state that outlives a connection; ``state`` attaches them, ``session_state``
is the session's side),
``protocol`` / ``protocol5`` / ``protocol5_connect`` / ``protocol311`` (one version's packet
handling), ``session`` (one client's session loop), ``tls`` (the server context), ``server``
(listener, connection caps, verdicts, session table). ``identity`` is the contract with the
registry: the ``IdentityAuthority`` decides who a certificate is.
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
