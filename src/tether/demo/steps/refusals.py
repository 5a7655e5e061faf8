"""Steps 8 and 9: a device from a rogue CA and a man-in-the-middle server, both refused."""

from __future__ import annotations

import ipaddress

from tether.demo.peers import ImpostorServer
from tether.demo.state import DemoState
from tether.demo.steps.common import (
    CLIENT_REFUSAL_CODES,
    FACTORY_SERIAL,
    LOG_WAIT_S,
    ROGUE_SERIAL,
    Outcome,
    cn,
    refusal,
    write,
    write_key,
)
from tether.device import DeviceIdentity, FileKey
from tether.pki import Role, RootCA, generate_key
from tether.pki.store import pem


def rogue_device(state: DemoState) -> Outcome:
    """A device whose CA was never registered: the gateway refuses it during TLS."""
    rogue_root = RootCA.generate("Rogue Root CA")
    rogue_ca = rogue_root.create_issuing_ca(common_name="Rogue Factory CA", role=Role.FACTORY)
    private = generate_key()
    certificate = rogue_ca.issue_device_certificate_for_key(private.public_key(), ROGUE_SERIAL)
    directory = state.ws / "rogue"
    identity = DeviceIdentity.load(
        write(directory / "device.crt.pem", pem(certificate)),
        FileKey(write_key(directory / "device.key.pem", private)),
    )
    mark = state.log.mark()
    refused = refusal(identity, state.endpoint())
    event = state.log.wait_for(CLIENT_REFUSAL_CODES, after=mark, timeout=LOG_WAIT_S)
    device_side = f"{refused.code}" if refused is not None else "CONNECTED (wrong)"
    gateway_side = event.message if event is not None else "nothing logged"
    return Outcome(
        f"refused: gateway {event.code if event else 'logged nothing'}, device {device_side}",
        refused is not None and event is not None,
        (
            f"{ROGUE_SERIAL} from 'Rogue Factory CA' (never registered): connect failed "
            f"({device_side})",
            f"gateway log: {gateway_side}",
        ),
    )


def impostor_server(state: DemoState) -> Outcome:
    """A TLS server with a certificate from another CA: the device refuses to talk to it."""
    impostor_root = RootCA.generate("Impostor Root CA")
    impostor_ca = impostor_root.create_issuing_ca(
        common_name="Impostor Server CA", role=Role.SERVER
    )
    private = generate_key()
    certificate = impostor_ca.issue_server_certificate(
        private.public_key(),
        dns_names=["localhost"],
        ip_addresses=[ipaddress.ip_address("127.0.0.1")],
    )
    directory = state.ws / "impostor"
    chain = write(directory / "server.chain.pem", pem(certificate) + pem(impostor_ca.certificate))
    key_path = write_key(directory / "server.key.pem", private)
    impostor = ImpostorServer(chain, key_path)
    state.impostor = impostor
    endpoint = state.endpoint(impostor.port)
    refused = refusal(state.identity(FACTORY_SERIAL), endpoint)
    code = refused.code if refused is not None else "connected (wrong)"
    return Outcome(
        f"device refused the server: {code}",
        code == "server_not_trusted",
        (
            f"impostor 127.0.0.1:{impostor.port} presents {cn(certificate.subject)} "
            "for 127.0.0.1 from 'Impostor Server CA' (same names, wrong CA)",
            f"{FACTORY_SERIAL} refused it: {code} (trust is the pinned root only)",
        ),
    )
