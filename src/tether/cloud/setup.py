"""``tether cloud init``: a data directory with a server identity, a pinned CA and a registry."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tether.cloud.registry import CARole, Registry
from tether.cloud.settings import (
    PINNED_CA,
    ROOT_CA,
    SERVER_CHAIN,
    SERVER_KEY,
    SETTINGS_FILE,
    ApiOptions,
    CloudSettings,
    GatewayOptions,
    PublishOptions,
)
from tether.errors import InvalidInputError
from tether.pki import IssuingCA, Role, generate_key
from tether.pki.store import create_directory, pem


def init_data_dir(
    data_dir: Path,
    *,
    server_ca: IssuingCA,
    root_ca: bytes,
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
    database_url: str | None = None,
    gateway: GatewayOptions | None = None,
    api: ApiOptions | None = None,
    publish: PublishOptions | None = None,
    online_device_ca: x509.Certificate | None = None,
    actor: str = "cli:init",
) -> CloudSettings:
    """Create the cloud's data directory, all or nothing, and migrate its registry.

    ``server_ca`` (role server) signs a fresh gateway certificate for ``dns_names`` and
    ``ip_addresses``; ``root_ca`` is the root certificate (PEM). What devices pin is written
    to ``pinned-ca.pem``: the server CA followed by the root, so standard clients can build
    the chain while Tether's agent anchors on the server CA alone (``settings`` says why).
    An existing non-empty ``data_dir`` is refused, never overwritten. ``online_device_ca``
    (the certificate of the CA named by ``api.device_ca``) is registered as a device CA, so
    the certificates the API issues are trusted by the gateway.
    """
    if server_ca.role is not Role.SERVER:
        raise InvalidInputError(
            f"the gateway certificate must come from a server issuing CA, not a {server_ca.role} "
            "CA: make one with `tether ca issue-intermediate --role server`",
            code="wrong_ca_role",
        )
    try:
        addresses = [ipaddress.ip_address(value) for value in ip_addresses]
    except ValueError as exc:
        raise InvalidInputError(f"not an IP address: {exc}") from None
    key = generate_key()
    certificate = server_ca.issue_server_certificate(
        key.public_key(), dns_names=list(dns_names), ip_addresses=addresses
    )
    settings = CloudSettings(
        data_dir=data_dir,
        database_url=database_url or CloudSettings.default_database_url(data_dir),
        gateway=gateway or GatewayOptions(),
        api=api or ApiOptions(),
        publish=publish or PublishOptions(),
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    create_directory(
        data_dir,
        {
            SETTINGS_FILE: (settings.to_json(), 0o600),  # may hold the database password
            SERVER_CHAIN: (pem(certificate) + pem(server_ca.certificate), 0o644),
            SERVER_KEY: (key_pem, 0o600),
            PINNED_CA: (pem(server_ca.certificate) + root_ca, 0o644),
            ROOT_CA: (root_ca, 0o644),
        },
    )
    with Registry.open(settings.database_url) as registry:
        if online_device_ca is not None:
            registry.register_ca(online_device_ca, role=CARole.DEVICE, actor=actor)
    return settings
