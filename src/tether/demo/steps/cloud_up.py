"""Step 3: the cloud starts (data directory, registry, gateway and admin API on loopback)."""

from __future__ import annotations

import ssl

import httpx

from tether.cloud.admin import create_admin
from tether.cloud.api import ApiServer, create_app
from tether.cloud.loop_thread import CloudThread
from tether.cloud.operations import AdminOperations
from tether.cloud.registry import CARole, Registry
from tether.cloud.service import CloudService
from tether.cloud.settings import GatewayOptions
from tether.cloud.setup import init_data_dir
from tether.demo.state import DemoState
from tether.demo.steps.common import (
    ACTOR,
    ADMIN,
    Outcome,
)
from tether.pki import Role
from tether.pki.store import pem


def cloud_starts(state: DemoState) -> Outcome:
    """Data directory, registry with three client CAs, gateway on a free loopback port."""
    settings = init_data_dir(
        state.ws / "cloud",
        server_ca=state.ca(Role.SERVER),
        root_ca=pem(state.root.certificate),
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1",),
        gateway=GatewayOptions(host="127.0.0.1", port=0),
    )
    state.settings = settings
    registry = Registry.open(settings.database_url)
    state.registry = registry
    for role, ca_role, jit in (
        (Role.FACTORY, CARole.FACTORY, True),
        (Role.DEVICE, CARole.DEVICE, False),
        (Role.SERVICE, CARole.SERVICE, False),
    ):
        registry.register_ca(
            state.issuing[role].certificate,
            role=ca_role,
            allow_auto_registration=jit,
            actor=ACTOR,
        )
    state.cloud = CloudThread(CloudService(registry, settings.gateway_settings()))
    port = state.cloud.start()
    # The admin API, as `tether cloud serve` runs it: same loop, the gateway's certificate,
    # the device CA online for console provisioning, one administrator token (in memory).
    root_certificate = state.root.certificate
    operations = AdminOperations(
        registry,
        root_certificate=root_certificate,
        online_ca=state.ca(Role.DEVICE),
        pinned_ca=settings.pinned_ca.read_bytes(),
    )
    api_port = state.cloud.start_api(
        ApiServer(
            create_app(registry, root_certificate=root_certificate, operations=operations),
            host="127.0.0.1",
            port=0,
            certificate_chain=settings.server_chain,
            private_key=settings.server_key,
        )
    )
    admin = create_admin(registry, ADMIN, actor=ACTOR)
    state.api = httpx.Client(
        base_url=f"https://127.0.0.1:{api_port}",
        verify=ssl.create_default_context(cafile=str(settings.pinned_ca)),
        timeout=state.options.timeout,
        headers={"Authorization": f"Bearer {admin.token}"},
    )
    registered = len(registry.list_cas())
    listening = state.log.wait_for({"gateway_listening"}, after=0, timeout=1.0) is not None
    # The cloud holds exactly one private key, its own; never the root's or a device's.
    keys = sorted(
        p.name
        for p in settings.data_dir.rglob("*")
        if p.is_file() and b"PRIVATE KEY-----" in p.read_bytes()
    )
    return Outcome(
        f"gateway on 127.0.0.1:{port}, API on {api_port}; {registered} client CAs registered",
        registered == 3 and listening and keys == [settings.server_key.name],
        (
            f"gateway 127.0.0.1:{port} (MQTT 5 over mutual TLS, uvloop thread), "
            "server certificate from the server CA",
            f"admin API https://127.0.0.1:{api_port} on the same loop (device CA online for "
            f"console provisioning); admin {ADMIN!r}, its token in memory only",
            f"registry {settings.database_url.rsplit('/', 1)[-1]} (SQLite): factory CA "
            "(just-in-time registration on), device CA, service CA",
            f"private keys in the cloud's directory: {', '.join(keys)} only (root key stays "
            "in the ceremony directory)",
        ),
    )
