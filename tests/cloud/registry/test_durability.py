"""Crash safety: an acknowledged revocation and an issued certificate survive a dead process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.support.pki import Issued, raw_leaf
from tether.cloud.registry import CARole, CertState, Provisioning, Registry


def test_revocation_survives_close_and_reopen(db_url: str, device_ca: Issued) -> None:
    with Registry.open(db_url) as reg:
        ca_fp = reg.register_ca(device_ca.certificate, role=CARole.DEVICE, actor="a").fingerprint
        reg.add_device("d1", provisioning=Provisioning.CONSOLE, actor="a")
        fp = reg.add_certificate(
            raw_leaf(device_ca, "d1").certificate,
            device_serial="d1",
            issuer_fingerprint=ca_fp,
            actor="a",
        ).fingerprint
        reg.revoke_certificate(fp, reason=x509.ReasonFlags.key_compromise, actor="a")
    with Registry.open(db_url) as reg:
        record = reg.get_certificate(fp)
        assert record.state is CertState.REVOKED
        assert record.revocation_reason is x509.ReasonFlags.key_compromise
        assert [r.fingerprint for r in reg.revoked_certificates(ca_fp)] == [fp]


def test_acknowledged_writes_survive_a_killed_process(
    db_url: str, tmp_path: Path, device_ca: Issued
) -> None:
    """A process that dies right after the call returns (no close, no cleanup) lost nothing."""
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(device_ca.certificate.public_bytes(Encoding.PEM))
    leaf = raw_leaf(device_ca, "d1").certificate
    leaf_pem = tmp_path / "leaf.pem"
    leaf_pem.write_bytes(leaf.public_bytes(Encoding.PEM))
    script = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from cryptography import x509
        from tether.cloud.registry import CARole, Provisioning, Registry
        reg = Registry.open({db_url!r})
        ca = x509.load_pem_x509_certificate(Path({str(ca_pem)!r}).read_bytes())
        leaf = x509.load_pem_x509_certificate(Path({str(leaf_pem)!r}).read_bytes())
        ca_fp = reg.register_ca(ca, role=CARole.DEVICE, actor="a").fingerprint
        reg.add_device("d1", provisioning=Provisioning.CONSOLE, actor="a")
        fp = reg.add_certificate(leaf, device_serial="d1", issuer_fingerprint=ca_fp,
                                 actor="a").fingerprint
        reg.revoke_certificate(fp, reason=x509.ReasonFlags.superseded, actor="a")
        sys.stdout.write("acknowledged\\n"); sys.stdout.flush()
        os._exit(0)  # no close(), no atexit, no WAL checkpoint
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "acknowledged", done.stderr
    assert (tmp_path / "registry.db-wal").exists()  # the commits live in the WAL, unmerged
    with Registry.open(db_url) as reg:
        [cert] = reg.list_certificates().items
        assert cert.state is CertState.REVOKED
        assert cert.certificate() == leaf
        assert reg.list_audit().items[0].action == "certificate.revoke"
