"""The same registry on a real, throwaway PostgreSQL server (marker ``postgres``).

The fixture starts its own server (tests/postgres.py) and FAILS when PostgreSQL is not
installed: CI installs the Debian ``postgresql`` package for this test.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cryptography import x509
from sqlalchemy import create_engine, text

from tests.postgres import PostgresMissingError, throwaway_postgres
from tests.support.pki import Issued, raw_leaf
from tether.cloud.registry import (
    CARole,
    CertState,
    DeviceExistsError,
    Provisioning,
    Registry,
    VerdictCode,
)
from tether.cloud.registry.models import Base
from tether.cloud.registry.policies import PolicyInUseError, TargetKind

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    try:
        with throwaway_postgres() as url:
            yield url
    except PostgresMissingError as exc:
        pytest.fail(str(exc))


def test_registry_on_postgres(pg_url: str, device_ca: Issued, factory_ca: Issued) -> None:
    with Registry.open(pg_url) as reg:
        ca_fp = reg.register_ca(device_ca.certificate, role=CARole.DEVICE, actor="a").fingerprint
        jit_fp = reg.register_ca(
            factory_ca.certificate, role=CARole.FACTORY, allow_auto_registration=True, actor="a"
        ).fingerprint
        reg.add_device("d1", provisioning=Provisioning.CONSOLE, actor="a")
        with pytest.raises(DeviceExistsError):
            reg.add_device("d1", provisioning=Provisioning.CONSOLE, actor="a")
        fp = reg.add_certificate(
            raw_leaf(device_ca, "d1").certificate,
            device_serial="d1",
            issuer_fingerprint=ca_fp,
            actor="a",
        ).fingerprint
        verdict = reg.check_connection(
            cert_fingerprint=fp, device_serial="d1", issuer_fingerprint=ca_fp
        )
        assert verdict.reason_code is VerdictCode.OK
        reg.revoke_certificate(fp, reason=x509.ReasonFlags.key_compromise, actor="a")

        cert = raw_leaf(factory_ca, "jit-1").certificate
        results: list[object] = []
        barrier = threading.Barrier(6)

        def connect() -> None:
            barrier.wait(timeout=10)
            results.append(
                reg.register_device_just_in_time(
                    cert, device_serial="jit-1", issuer_fingerprint=jit_fp
                )
            )

        threads = [threading.Thread(target=connect) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert len(results) == 6 and all(r == results[0] for r in results)
        assert reg.list_devices().total == 2

    with Registry.open(pg_url) as reg:  # re-open: idempotent migration, durable revocation
        assert reg.get_certificate(fp).state is CertState.REVOKED
        audit_total = reg.list_audit().total
        assert audit_total == 6

    engine = create_engine(pg_url)
    try:
        for statement in (
            "UPDATE audit_log SET actor = 'x'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with engine.connect() as conn, pytest.raises(Exception, match="append-only"):
                conn.execute(text(statement))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar() == audit_total
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_policies_on_postgres(pg_url: str) -> None:
    """Migration 0006 on PostgreSQL: versions, attachments, groups, attributes, snapshot."""
    document = '{"statements":[{"actions":["connect"],"effect":"allow","resources":["+"]}]}'
    with Registry.open(pg_url) as reg:
        reg.add_device("pol-1", provisioning=Provisioning.CONSOLE, actor="a")
        assert reg.put_policy("fleet", document, actor="a").version == 1
        assert reg.put_policy("fleet", document.replace("allow", "deny"), actor="a").version == 2
        reg.attach_policy("fleet", TargetKind.GROUP, "line-7", actor="a")
        reg.add_device_group("pol-1", "line-7", actor="a")
        reg.set_device_attribute("pol-1", "model", "X2", actor="a")
        snapshot = reg.policy_snapshot()
        assert snapshot.policies["fleet"][0] == 2
        assert snapshot.groups == {"pol-1": ("line-7",)}
        assert snapshot.attributes == {"pol-1": (("model", "X2"),)}
        with pytest.raises(PolicyInUseError):
            reg.delete_policy("fleet", actor="a")
        reg.detach_policy("fleet", TargetKind.GROUP, "line-7", actor="a")
        reg.delete_policy("fleet", actor="a")
        assert reg.list_policies() == []
