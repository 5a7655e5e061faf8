"""MQTT 5 topic aliases of one connection, both directions (spec 3.3.2.3.4).

Inbound: the client may set up to the Topic Alias Maximum the gateway announced in CONNACK;
alias 0 or beyond it is "Topic Alias invalid" (0x94), an empty topic with an alias never set
is a Protocol Error (0x82).

Outbound, up to the client's own Topic Alias Maximum: the first topics delivered take an
alias each for the whole connection, never reassigned (no eviction, so no alias ever means
two topics). A PUBLISH leaves its topic out only once the alias was set by a PUBLISH already
written to the socket: a message that waited in the queue while a QoS 0 one overtook it can
never refer to an alias the client has not seen yet.
"""

from __future__ import annotations

from mqtt5 import DisconnectReasonCode


class AliasError(Exception):
    """An inbound alias the spec refuses; carries the DISCONNECT reason and the words."""

    def __init__(self, reason: DisconnectReasonCode, code: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason
        self.code = code
        self.text = text


class TopicAliases:
    """The alias tables of one MQTT 5 connection (see the module docstring)."""

    def __init__(self, inbound_maximum: int) -> None:
        self._inbound_maximum = inbound_maximum
        self._inbound: dict[int, str] = {}
        self._outbound_maximum = 0
        self._outbound: dict[str, int] = {}
        self._confirmed: set[int] = set()

    def allow_outbound(self, maximum: int) -> None:
        """The client's Topic Alias Maximum from CONNECT (0: no aliases for it)."""
        self._outbound_maximum = maximum

    def resolve(self, topic: str, alias: int | None) -> str:
        """The topic an inbound PUBLISH means; raises ``AliasError`` for a refused alias."""
        if alias is None:
            return topic
        if not 1 <= alias <= self._inbound_maximum:
            raise AliasError(
                DisconnectReasonCode.TOPIC_ALIAS_INVALID,
                "mqtt_topic_alias_invalid",
                f"topic alias {alias} is outside 1..{self._inbound_maximum}",
            )
        if topic:
            self._inbound[alias] = topic
            return topic
        known = self._inbound.get(alias)
        if known is None:
            raise AliasError(
                DisconnectReasonCode.PROTOCOL_ERROR,
                "mqtt_protocol_error",
                f"topic alias {alias} was never set (an empty topic needs a known alias)",
            )
        return known

    def outbound(self, topic: str) -> tuple[str, int | None]:
        """(topic to write, alias) for a PUBLISH to the client: ``""`` once it is known."""
        alias = self._outbound.get(topic)
        if alias is None and len(self._outbound) < self._outbound_maximum:
            alias = len(self._outbound) + 1
            self._outbound[topic] = alias
        return ("" if alias in self._confirmed else topic), alias

    def written(self, topic: str) -> None:
        """A PUBLISH for ``topic`` reached the socket: its alias is known to the client."""
        alias = self._outbound.get(topic)
        if alias is not None:
            self._confirmed.add(alias)
