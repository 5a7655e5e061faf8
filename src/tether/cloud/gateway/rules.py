"""The identity rules both MQTT versions apply, written once.

The client id must be the certificate's identity (invariant 5), and every publish (and Will)
is held to the ``TopicPolicy``, its Response Topic too (``TopicPolicy.may_request_reply``);
the connect right is the policy's too. Refusals name the policy statement that decided.
Each function returns why it refuses, or ``None``; the protocol handler says it the way its
version can (an MQTT 5 reason code, a 3.1.1 CONNACK code or a close).
"""

from __future__ import annotations

from tether.cloud.gateway.identity import Identity
from tether.cloud.gateway.policy import TopicPolicy


def client_id_refusal(identity: Identity, client_id: str) -> str | None:
    """Why ``client_id`` may not connect with ``identity``'s certificate, or ``None``."""
    if client_id != identity.name:
        return (
            f"client id {client_id!r} is not the certificate's identity {identity.name!r}; "
            "connect with the device serial as client id"
        )
    return None


def publish_refusal(
    policy: TopicPolicy, identity: Identity, topic: str, response_topic: str | None
) -> tuple[str, str] | None:
    """(code, words) if the policy refuses this topic or Response Topic, else ``None``."""
    if not policy.may_publish(identity, topic):
        why = policy.explain(identity, "publish", topic)
        return "publish_not_authorized", f"topic {topic!r} is outside what it may publish ({why})"
    if response_topic is not None and not policy.may_request_reply(identity, response_topic):
        why = policy.explain(identity, "publish", response_topic)
        return (
            "response_topic_not_authorized",
            f"Response Topic {response_topic!r} is outside what it may publish ({why})",
        )
    return None


def connect_refusal(policy: TopicPolicy, identity: Identity) -> str | None:
    """Why the policy refuses ``identity`` the connect right (naming the statement), or ``None``."""
    if not policy.may_connect(identity):
        return policy.explain(identity, "connect", identity.name)
    return None
