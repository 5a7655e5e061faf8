"""Every admin write goes through the admin service (``tether.cloud.operations``).

The API routes, the console pages and the ``tether cloud`` commands may read the registry
directly, but a write there would skip the service (and whatever rule it enforces before the
registry sees the call). This reads their source: no registry write method is named on a
``registry`` there, called or handed to a thread pool.
"""

from __future__ import annotations

import ast
import inspect
from types import ModuleType

import pytest

import tether.cli.cloud.admins
import tether.cli.cloud.cas
import tether.cli.cloud.fleet
import tether.cli.cloud.host
import tether.cli.cloud.local
import tether.cloud.api.app
import tether.cloud.api.console
from tether.cloud.operations import AdminOperations
from tether.cloud.registry import Registry

READS = {
    "audit_after", "check_connection", "find_admin", "find_ca_by_subject_key_id", "get_admin",
    "get_ca", "get_certificate", "get_device", "last_audit_id", "list_admins", "list_audit",
    "list_cas", "list_certificates", "list_devices", "open", "close", "published_crl",
    "revoked_certificates", "url",
}  # fmt: skip
# The gateway's own writes (JIT, refusal audits, last seen) are not admin writes.
GATEWAY_WRITES = {"register_device_just_in_time", "audit", "touch_device", "touch_devices"}
WRITES = {
    name
    for name, _ in inspect.getmembers(Registry, callable)
    if not name.startswith("_") and name not in READS | GATEWAY_WRITES
}


def test_the_write_list_is_the_registry_s_mutating_methods() -> None:
    assert {"revoke_certificate", "set_device_status", "set_ca_status", "rebind_device"} <= WRITES
    assert {"add_admin", "rotate_admin", "revoke_admin", "apply_crl", "register_ca"} <= WRITES


@pytest.mark.parametrize(
    "module",
    [
        tether.cloud.api.app,
        tether.cloud.api.console,
        tether.cli.cloud.host,
        tether.cli.cloud.local,
        tether.cli.cloud.fleet,
        tether.cli.cloud.cas,
        tether.cli.cloud.admins,
    ],
)
def test_no_admin_door_writes_to_the_registry_directly(module: ModuleType) -> None:
    tree = ast.parse(inspect.getsource(module))
    direct = [
        f"line {node.lineno}: registry.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in WRITES
        and isinstance(node.value, ast.Name)
        and node.value.id == "registry"
    ]
    # Nor the admin-credential helpers the service wraps (they write through the registry).
    direct += [
        f"line {node.lineno}: tether.cloud.admin.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "tether.cloud.admin"
        for alias in node.names
        if alias.name in {"create_admin", "rotate_admin", "revoke_admin"}
    ]
    assert direct == []


def test_the_service_offers_every_write_the_doors_need() -> None:
    for name in ("set_device_status", "rebind_device", "revoke_certificate", "set_ca_status",
                 "trust_ca", "register_ca", "publish_crl", "create_admin", "rotate_admin",
                 "revoke_admin"):  # fmt: skip
        assert callable(getattr(AdminOperations, name))
