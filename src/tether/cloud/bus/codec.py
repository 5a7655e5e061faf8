"""A routed message on the wire between workers: one JSON line, then the payload bytes.

The sender identity travels with the message (the receiving worker attributes nothing: the
``tether-sender`` property was set by the worker that authenticated the publisher, and the
identity is what policy on the receiving side may consult). The origin worker and a sequence
number let a receiver drop a second copy (NATS delivers once per matching subscription, and a
worker holding ``a/#`` and ``a/+`` has two) and never route a message back to its publisher.
``hops`` counts how often a copy for a shared subscription was passed on by a worker whose
members all dropped it (bounded, see :mod:`tether.cloud.bus.nats`); absent means 0.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from tether.cloud.gateway.broker import Message
from tether.cloud.gateway.identity import Identity, IdentityKind


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message as received from the bus: who sent it (worker, sequence) and what."""

    origin: str
    sequence: int
    message: Message
    hops: int = 0


def encode(message: Message, origin: str, sequence: int, hops: int = 0) -> bytes:
    """The bytes of one message for the bus."""
    sender = message.sender
    meta: dict[str, Any] = {
        "o": origin,
        "s": sequence,
        "t": message.topic,
        "q": message.qos,
        "i": [
            sender.kind.value,
            sender.name,
            sender.certificate_fingerprint,
            sender.issuer,
            sender.issuer_fingerprint,
        ],
        "u": message.user_properties,
    }
    if hops:
        meta["h"] = hops
    if message.payload_format_indicator:
        meta["pf"] = message.payload_format_indicator
    if message.message_expiry_interval is not None:
        meta["me"] = message.message_expiry_interval
    if message.content_type is not None:
        meta["ct"] = message.content_type
    if message.response_topic is not None:
        meta["rt"] = message.response_topic
    if message.correlation_data is not None:
        meta["cd"] = base64.b64encode(message.correlation_data).decode("ascii")
    # json.dumps never writes a raw newline: the first b"\n" ends the header.
    return json.dumps(meta, separators=(",", ":")).encode("utf-8") + b"\n" + message.payload


def decode(data: bytes) -> Envelope:
    """The inverse of :func:`encode`; ``ValueError`` for bytes it did not make."""
    header, sep, payload = data.partition(b"\n")
    if not sep:
        raise ValueError("a bus message has no header line")
    try:
        meta = json.loads(header)
        kind, name, fingerprint, issuer, issuer_fingerprint = meta["i"]
        correlation = meta.get("cd")
        message = Message(
            topic=str(meta["t"]),
            payload=payload,
            qos=int(meta["q"]),
            sender=Identity(
                kind=IdentityKind(kind),
                name=name,
                certificate_fingerprint=fingerprint,
                issuer=issuer,
                issuer_fingerprint=issuer_fingerprint,
            ),
            user_properties=tuple((str(k), str(v)) for k, v in meta["u"]),
            payload_format_indicator=int(meta.get("pf", 0)),
            message_expiry_interval=meta.get("me"),
            content_type=meta.get("ct"),
            response_topic=meta.get("rt"),
            correlation_data=None if correlation is None else base64.b64decode(correlation),
        )
        return Envelope(str(meta["o"]), int(meta["s"]), message, int(meta.get("h", 0)))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed bus message ({exc})") from exc


class Dedup:
    """Drops a second copy: per origin, only sequence numbers above the last one pass.

    Copies of one message from one origin arrive together and in publish order (one
    publishing connection, one server path), so the last sequence per origin is enough.
    At most ``max_origins`` origins are remembered (workers restart with a new id); the
    oldest is forgotten first.
    """

    def __init__(self, max_origins: int = 4096) -> None:
        self._last: dict[str, int] = {}
        self._max = max_origins

    def fresh(self, origin: str, sequence: int) -> bool:
        """Whether this (origin, sequence) is seen for the first time."""
        last = self._last.get(origin)
        if last is not None and sequence <= last:
            return False
        if last is None and len(self._last) >= self._max:
            del self._last[next(iter(self._last))]
        self._last[origin] = sequence
        return True
