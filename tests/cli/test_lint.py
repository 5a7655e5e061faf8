"""`tether lint`: exit codes, text and JSON output, foreign and malformed input."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from tests.pki.util import device_csr, write_pem
from tests.support.cli import tether
from tether.pki import IssuingCA, Role, RootCA
from tether.pki.keys import generate_key


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("lint")
    root = RootCA.generate()
    ca: IssuingCA = root.create_issuing_ca(common_name="Lint Device CA", role=Role.DEVICE)
    leaf = ca.issue_device_certificate(device_csr("dev-5"), "dev-5")
    (work / "leaf.der").write_bytes(leaf.public_bytes(Encoding.DER))
    (work / "bundle.pem").write_bytes(
        b"".join(c.public_bytes(Encoding.PEM) for c in (leaf, ca.certificate, root.certificate))
    )
    return {
        "root": write_pem(work / "root.pem", root.certificate),
        "ca": write_pem(work / "ca.pem", ca.certificate),
        "leaf": write_pem(work / "leaf.pem", leaf),
        "leaf_der": work / "leaf.der",
        "bundle": work / "bundle.pem",
    }


def test_a_clean_chain_exits_0(chain: dict[str, Path]) -> None:
    result = tether("lint", chain["leaf"], "--chain", chain["ca"], "--chain", chain["root"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "clean" in result.stdout


def test_der_input_and_bundles_are_read(chain: dict[str, Path]) -> None:
    assert (
        tether(
            "lint", chain["leaf_der"], "--chain", chain["ca"], "--chain", chain["root"]
        ).returncode
        == 0
    )
    assert tether("lint", chain["bundle"]).returncode == 0


def test_json_output(chain: dict[str, Path]) -> None:
    result = tether("lint", chain["leaf"], "--json")
    assert result.returncode == 0
    findings = json.loads(result.stdout)
    assert findings == [
        {
            "severity": "info",
            "code": "chain.issuer_unknown",
            "message": findings[0]["message"],
            "subject": "CN=dev-5",
        }
    ]


def test_missing_issuer_in_a_given_chain_exits_1(chain: dict[str, Path]) -> None:
    result = tether("lint", chain["leaf"], "--chain", chain["root"], "--json")
    assert result.returncode == 1
    assert "chain.issuer_missing" in {f["code"] for f in json.loads(result.stdout)}


def test_a_foreign_rsa_certificate_gives_findings_not_a_crash(tmp_path: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem",
         "-out", "c.pem", "-subj", "/CN=Bob Smith/emailAddress=bob@example.com", "-days", "1"],
        cwd=tmp_path, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    result = tether("lint", tmp_path / "c.pem")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "key.type" in result.stdout and "ERROR" in result.stdout
    codes = {f["code"] for f in json.loads(tether("lint", tmp_path / "c.pem", "--json").stdout)}
    assert {"key.type", "signature.algorithm"} <= codes


def test_a_pii_device_certificate_is_an_error(tmp_path: Path) -> None:
    key = generate_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Alice Smith")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(3)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    result = tether("lint", write_pem(tmp_path / "c.pem", cert), "--json")
    assert result.returncode == 1
    assert "basic_constraints.missing" in {f["code"] for f in json.loads(result.stdout)}


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"not a certificate", "pki_malformed_input"),
        (b"x" * (64 * 1024 + 1), "pki_input_too_large"),
    ],
)
def test_unreadable_input_exits_3(tmp_path: Path, content: bytes, code: str) -> None:
    path = tmp_path / "c.pem"
    path.write_bytes(content)
    result = tether("lint", path)
    assert result.returncode == 3
    assert code in result.stderr and "Traceback" not in result.stderr


def test_missing_file_exits_3(tmp_path: Path) -> None:
    result = tether("lint", tmp_path / "nope.pem")
    assert result.returncode == 3 and "pki_input_not_found" in result.stderr
