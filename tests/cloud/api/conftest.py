"""A running cloud with its admin API: gateway and API on one uvloop loop, real HTTPS.

The API is served exactly as ``tether cloud serve`` serves it (``ApiServer`` on the gateway's
event loop, the gateway's certificate from the data directory); tests talk to it with httpx
over TLS pinned to the test root, on 127.0.0.1.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.cloud.conftest import Cloud
from tether.cloud.admin import create_admin
from tether.cloud.api import ApiServer, create_app
from tether.cloud.hygiene import LiveView
from tether.cloud.operations import AdminOperations
from tether.cloud.registry import Registry
from tether.cloud.settings import ApiLimitOptions

ADMIN = "alice"
# Tests share one address (127.0.0.1) and make many refused calls on purpose: the default
# fixture lifts the per-address limits; the tests of the limits pass their own.
ROOMY_LIMITS = ApiLimitOptions(auth_failures_per_address=100_000, kdf_burst_per_address=100_000)


@dataclass(frozen=True)
class Snapshot:
    """Everything a refused call must leave as it was."""

    devices: tuple[Any, ...]
    certificates: tuple[Any, ...]
    cas: tuple[Any, ...]
    last_audit: int


def snapshot(registry: Registry) -> Snapshot:
    return Snapshot(
        devices=registry.list_devices(limit=1000).items,
        certificates=registry.list_certificates(limit=1000).items,
        cas=tuple(registry.list_cas()),
        last_audit=registry.last_audit_id(),
    )


@dataclass
class Api:
    """The cloud plus its API: ``http`` carries the admin token, ``anonymous`` none."""

    cloud: Cloud
    port: int
    token: str
    http: httpx.Client
    anonymous: httpx.Client

    @property
    def registry(self) -> Registry:
        return self.cloud.registry


def pinned_context(cloud: Cloud) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cloud.pki.root_path))
    return context


@contextmanager
def serve_api(
    cloud: Cloud,
    *,
    limits: ApiLimitOptions = ROOMY_LIMITS,
    admin: str | None = ADMIN,
    live_view: Callable[[], LiveView] | None = None,
) -> Iterator[Api]:
    """The admin API over ``cloud``'s registry on a free port (a new admin ``admin``);
    ``live_view`` reads the gateway's sessions (``read_live_view`` on its endpoints)."""
    token = "" if admin is None else create_admin(cloud.registry, admin, actor="test:setup").token
    operations = AdminOperations(
        cloud.registry,
        root_certificate=cloud.pki.root.certificate,
        online_ca=cloud.pki.device_ca,
    )
    server = ApiServer(
        create_app(
            cloud.registry,
            root_certificate=cloud.pki.root.certificate,
            operations=operations,
            limits=limits,
            live_view=live_view,
        ),
        host="127.0.0.1",
        port=0,
        certificate_chain=cloud.settings.server_chain,
        private_key=cloud.settings.server_key,
        limits=limits,
    )
    port = cloud.running.call(server.start())
    base = f"https://127.0.0.1:{port}"
    context = pinned_context(cloud)
    with ExitStack() as stack:
        stack.callback(lambda: cloud.running.call(server.stop(), timeout=15))
        http = stack.enter_context(
            httpx.Client(
                base_url=base,
                verify=context,
                timeout=10.0,
                headers={"Authorization": f"Bearer {token}"},
            )
        )
        anonymous = stack.enter_context(httpx.Client(base_url=base, verify=context, timeout=10.0))
        yield Api(cloud, port, token, http, anonymous)


@pytest.fixture
def api(cloud: Cloud) -> Iterator[Api]:
    with serve_api(cloud) as served:
        yield served


@pytest.fixture
def api_with(cloud: Cloud) -> Iterator[Callable[..., Api]]:
    """Start API servers over ``cloud`` (own limits, same registry); all stop with the test."""
    with ExitStack() as stack:

        def start(**kwargs: Any) -> Api:
            return stack.enter_context(serve_api(cloud, **kwargs))

        yield start
