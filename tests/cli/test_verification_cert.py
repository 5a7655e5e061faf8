"""`tether ca verification-cert`: a CN=<code> leaf signed by the CA key, as the cloud checks it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.cli import tether
from tests.support.pki import CEREMONY_PASSPHRASE
from tether.pki import Role, RootCA
from tether.pki.store import CaDirectory
from tether.pki.verification import (
    VerificationCertificateError,
    check_verification_certificate,
    issue_verification_certificate,
)

PASSPHRASE = CEREMONY_PASSPHRASE
CODE = "3f1c0b6a9e2d4c7b8a5f6e1d2c3b4a59"


def secrets(passphrase: str = PASSPHRASE) -> dict[str, str]:
    return {"TETHER_CA_PASSPHRASE": passphrase, "TETHER_ROOT_PASSPHRASE": passphrase}


@pytest.fixture
def ca_dir(ca_dirs: dict[str, Path]) -> Path:
    """The session's factory CA directory (a vendor's CA proving it holds its key)."""
    return ca_dirs["factory"]


def test_the_cli_makes_a_verification_certificate_the_cloud_accepts(
    ca_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "verification.pem"
    done = tether(
        "ca", "verification-cert", "--ca", ca_dir, "--code", CODE, "--out", out, env=secrets()
    )
    assert done.returncode == 0, done.stderr
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    ca_cert = CaDirectory.open(ca_dir).certificate
    assert cert.subject.rfc4514_string() == f"CN={CODE}"
    assert cert.issuer == ca_cert.subject
    assert cert.not_valid_after_utc - datetime.now(UTC) <= timedelta(hours=1, minutes=1)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is False
    check_verification_certificate(ca_cert, cert, CODE)
    with pytest.raises(VerificationCertificateError):
        check_verification_certificate(ca_cert, cert, "another-code")
    with pytest.raises(VerificationCertificateError):
        check_verification_certificate(
            ca_cert, cert, CODE, now=datetime.now(UTC) + timedelta(hours=2)
        )


@pytest.mark.parametrize(
    ("args", "passphrase", "code"),
    [
        (["--code", CODE], "wrong passphrase!", "pki_wrong_passphrase"),
        (["--code", "not a code!"], PASSPHRASE, "pki_invalid_serial"),
        (["--code", CODE, "--validity-minutes", "5000"], PASSPHRASE, "verification_validity"),
    ],
    ids=["wrong-passphrase", "bad-code", "too-long"],
)
def test_refusals_write_nothing(
    ca_dir: Path, tmp_path: Path, args: list[str], passphrase: str, code: str
) -> None:
    out = tmp_path / "verification.pem"
    done = tether(
        "ca", "verification-cert", "--ca", ca_dir, *args, "--out", out, env=secrets(passphrase)
    )
    assert done.returncode == 3
    assert code in done.stderr
    assert not out.exists()


def test_an_existing_output_file_is_never_overwritten(ca_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "verification.pem"
    out.write_text("keep me")
    done = tether(
        "ca", "verification-cert", "--ca", ca_dir, "--code", CODE, "--out", out, env=secrets()
    )
    assert done.returncode == 3 and "already exists" in done.stderr
    assert out.read_text() == "keep me"


def test_a_certificate_signed_by_another_key_does_not_verify() -> None:
    root = RootCA.generate()
    claimed = root.create_issuing_ca(common_name="Claimed CA", role=Role.DEVICE)
    impostor = root.create_issuing_ca(common_name="Impostor CA", role=Role.DEVICE)
    forged = issue_verification_certificate(claimed.certificate, impostor.signer, CODE)
    with pytest.raises(VerificationCertificateError, match="not signed by this CA"):
        check_verification_certificate(claimed.certificate, forged, CODE)
