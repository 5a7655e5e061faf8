"""Attribution for receivers without user properties (MQTT 3.1.1): ``$sender`` topics.

MQTT 5 receivers learn who sent a message from the ``tether-sender`` user property
(:func:`tether.cloud.gateway.broker.attributed_properties`). MQTT 3.1.1 has no properties, and
an envelope would change the payload every other client sees, so the gateway offers a topic
convention instead: a client subscribes to

    $sender/<kind>/<name>/<topic filter>

(``<kind>`` is ``device``, ``service`` or ``+``; ``<name>`` an identity name or ``+``) and
receives each message that matches ``<topic filter>`` on the topic
``$sender/<kind>/<name>/<topic>``, where kind and name are those of the certificate that
published it. It cannot be spoofed: the gateway alone writes these topics (the policy lets no
identity publish outside ``devices/``, so nobody can publish to ``$sender/...``), the kind and
name come from the sender's certificate, and the inner filter is held to the subscriber's
policy exactly like a plain subscription. It works for MQTT 5 clients too (one rule for both).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tether.cloud.gateway.identity import IDENTITY_NAME_PATTERN, IdentityKind
from tether.cloud.gateway.topics import is_valid_topic_filter

if TYPE_CHECKING:
    from tether.cloud.gateway.broker import Message, Subscriber

SENDER_ROOT = "$sender"
_KINDS = {kind.value for kind in IdentityKind}


@dataclass(frozen=True, slots=True)
class SenderView:
    """A parsed ``$sender/<kind>/<name>/<filter>`` subscription."""

    kind: str  # an IdentityKind value or "+"
    name: str  # an identity name or "+"
    inner: str  # the topic filter the broker matches


def is_view(topic_filter: str) -> bool:
    """Whether the filter is in the ``$sender`` namespace (valid or not)."""
    return topic_filter == SENDER_ROOT or topic_filter.startswith(SENDER_ROOT + "/")


def parse_view(topic_filter: str) -> SenderView | None:
    """The view a ``$sender`` filter asks for, or ``None`` if it is not a valid one."""
    parts = topic_filter.split("/", 3)
    if len(parts) != 4 or parts[0] != SENDER_ROOT:
        return None
    _, kind, name, inner = parts
    if kind != "+" and kind not in _KINDS:
        return None
    if name != "+" and not IDENTITY_NAME_PATTERN.fullmatch(name):
        return None
    if not is_valid_topic_filter(inner) or is_view(inner) or inner.startswith("$"):
        return None
    return SenderView(kind, name, inner)


def view_topic(message: Message) -> str:
    """The topic a view subscriber receives ``message`` on."""
    sender = message.sender
    return f"{SENDER_ROOT}/{sender.kind.value}/{sender.name}/{message.topic}"


class ViewSubscriber:
    """One view subscription as the broker sees it: rewrites the topic, then delivers.

    The broker matches ``view.inner``; this filters on the sender and hands the session the
    message on its ``$sender`` topic.
    """

    def __init__(self, session: Subscriber, view: SenderView) -> None:
        self._session = session
        self.view = view

    def deliver(self, message: Message, qos: int) -> bool:
        """Deliver ``message`` to the session on its view topic if the sender matches."""
        view = self.view
        sender = message.sender
        if (view.kind != "+" and sender.kind.value != view.kind) or (
            view.name != "+" and sender.name != view.name
        ):
            return True  # not for this view; nothing was lost
        return self._session.deliver(replace(message, topic=view_topic(message)), qos)
