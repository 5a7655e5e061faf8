"""The factory station: keys born in the secure element, certificates from the factory CA."""

from tether.factory.records import ManufacturingLog, ManufacturingRecord
from tether.factory.station import FactoryStation, ProvisionedDevice, SerialAlreadyMadeError

__all__ = [
    "FactoryStation",
    "ManufacturingLog",
    "ManufacturingRecord",
    "ProvisionedDevice",
    "SerialAlreadyMadeError",
]
