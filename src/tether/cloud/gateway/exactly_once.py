"""Incoming QoS 2 of one session: each packet identifier is routed once (spec 4.3.3).

The message is routed on the first PUBLISH of an identifier and the identifier remembered
until PUBREL, so a PUBLISH resent with DUP (its PUBREC was lost) is acknowledged again and
not routed again. At most ``limit`` identifiers wait for their PUBREL: the server's Receive
Maximum, beyond which MQTT 5 says 0x93 Receive Maximum exceeded (section 4.9). A persistent
session keeps them across a reconnect (:mod:`.persistence`), so exactly once holds when the
connection breaks between PUBREC and PUBREL.
"""

from __future__ import annotations


class ExactlyOnce:
    """The identifiers of incoming QoS 2 messages routed and not yet released."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._waiting: set[int] = set()

    def receive(self, packet_id: int) -> bool | None:
        """``True``: route it (first time); ``False``: a resend; ``None``: over the limit."""
        if packet_id in self._waiting:
            return False
        if len(self._waiting) >= self._limit:
            return None
        self._waiting.add(packet_id)
        return True

    def release(self, packet_id: int) -> bool:
        """PUBREL: forget the identifier; ``False`` if it was not waiting."""
        if packet_id in self._waiting:
            self._waiting.remove(packet_id)
            return True
        return False

    def snapshot(self) -> list[int]:
        """The identifiers waiting, for a persistent session to keep."""
        return sorted(self._waiting)

    def restore(self, packet_ids: tuple[int, ...]) -> None:
        """A resumed session's identifiers: still routed once (within the limit)."""
        for packet_id in packet_ids[: self._limit]:
            self._waiting.add(packet_id)
