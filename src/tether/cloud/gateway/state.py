"""Give a gateway its state stores in one call: retained messages and persistent sessions.

For whoever builds the gateway (``cloud/service.py``, issue 15's this round)::

    store = RegistryMqttState.on(registry, StoreLimits(...))
    detach = await attach_stores(gateway.broker, store)   # on the gateway's loop, at start
    ...
    detach()                                              # after gateway.stop()

Without it the gateway offers neither (Retain Available 0, Session Expiry 0 granted).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from tether.cloud.gateway.broker import Broker
from tether.cloud.gateway.persistence import PersistentSessions
from tether.cloud.gateway.retained import RetainedMessages
from tether.cloud.gateway.stores import RetainedStore, SessionStore


class MqttStateStore(RetainedStore, SessionStore, Protocol):
    """One store that keeps both (the registry-backed one does)."""


async def attach_stores(broker: Broker, store: MqttStateStore) -> Callable[[], None]:
    """Set ``broker.retained`` and ``broker.sessions``, restore the stored sessions' stand-ins.

    Returns the function that stops the stores' threads (call it after the gateway stopped).
    """
    retained = RetainedMessages(store)
    sessions = PersistentSessions(store)
    broker.retained = retained
    broker.sessions = sessions
    if broker.bus is not None:
        sessions.attach_bus(broker.bus)  # hand sessions between workers (gateway/handover.py)
    await sessions.restore(broker)

    def detach() -> None:
        broker.retained = None
        broker.sessions = None
        retained.close()
        sessions.close()

    return detach
