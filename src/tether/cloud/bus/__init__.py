"""Messages between gateway workers and hosts: a bus with two implementations.

See :mod:`tether.cloud.bus.base` for the contract, :mod:`.inprocess` and :mod:`.nats` for the
implementations, :mod:`.subjects` for how MQTT topics become NATS subjects, and
:mod:`.natsd` for the local nats-server a multi-worker service supervises.
"""

from tether.cloud.bus.base import Bus, ControlHandler, Receiver
from tether.cloud.bus.inprocess import InProcessBus, InProcessHub

__all__ = ["Bus", "ControlHandler", "InProcessBus", "InProcessHub", "Receiver"]
