"""The gateway's log lines: one stable reason code per event, in the text and in ``extra``."""

from __future__ import annotations

import logging

from tether.cloud.gateway.stats import note_event

logger = logging.getLogger("tether.gateway")


def log_event(
    level: int, code: str, message: str, *, peer: str, identity: str | None = None
) -> None:
    """Log one gateway event with its stable code in the text and in ``extra``.

    ``extra`` carries ``tether_code``, ``peer`` ("host:port") and ``identity`` (name or None)
    so log pipelines can match on them without parsing the message.
    """
    note_event(code, level)  # settles the connection's handshake outcome (gateway.stats)
    who = f"{identity}@{peer}" if identity else peer
    logger.log(
        level,
        "[%s] %s: %s",
        code,
        who,
        message,
        extra={"tether_code": code, "peer": peer, "identity": identity},
    )
