"""The gateway tests' certificates, composed from the one test PKI (``tests.support.pki``).

root (tether.pki) -> device CA (CN only, raw: tests pin ``issuer == "CN=Tether Test Device
                     CA"``) -> device leaves (CN = serial, clientAuth)
                  -> service issuing CA (tether.pki) -> service leaf (tether.pki)
                  -> server issuing CA (tether.pki) -> the gateway's certificate (localhost,
                     127.0.0.1; the file holds the chain leaf + server CA)

Made once per session in a temporary directory; nothing is checked in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.support.pki import Issued, TestPKI, raw_ca, raw_leaf
from tether.pki import Role

DEVICE_SERIAL = "SN0001"
OTHER_SERIAL = "SN0002"
SERVICE_NAME = "telemetry-ingest"


@dataclass(frozen=True)
class GatewayPKI:
    """Everything a gateway test needs, written; ``root`` is what clients trust for the server."""

    directory: Path
    root: Issued
    device_ca: Issued
    service_ca: Issued
    server_ca: Issued
    server: Issued
    device: Issued  # CN = DEVICE_SERIAL
    other_device: Issued  # CN = OTHER_SERIAL
    service: Issued  # CN = SERVICE_NAME


def build_test_pki(directory: Path) -> GatewayPKI:
    """Generate and write the whole gateway test PKI under ``directory``."""
    pki = TestPKI("Tether Test Root", ca_names="Tether Test")
    root = pki.root_issued.write(directory, "root")
    device_ca = raw_ca("Tether Test Device CA", root).write(directory, "device_ca")
    return GatewayPKI(
        directory=directory,
        root=root,
        device_ca=device_ca,
        service_ca=pki.ca_issued(Role.SERVICE).write(directory, "service_ca"),
        server_ca=pki.ca_issued(Role.SERVER).write(directory, "server_ca"),
        server=pki.server("localhost", "127.0.0.1").write(directory, "server"),
        device=raw_leaf(device_ca, DEVICE_SERIAL).write(directory, DEVICE_SERIAL),
        other_device=raw_leaf(device_ca, OTHER_SERIAL).write(directory, OTHER_SERIAL),
        service=pki.service(SERVICE_NAME).write(directory, SERVICE_NAME),
    )
