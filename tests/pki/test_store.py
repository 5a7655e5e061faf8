"""CA directories: layout, key at rest, no overwrite, atomic creation, revocation, CRLs."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509

from tests.pki.util import device_csr
from tether.errors import ConfigurationError
from tether.pki import Role, verify_chain
from tether.pki.errors import (
    AlreadyRevokedError,
    CaDirectoryError,
    CaDirectoryExistsError,
    CaDirectoryNotFoundError,
    InvalidNameError,
    NotIssuedByThisCaError,
    UnknownKeyReferenceError,
    WeakPassphraseError,
    WrongPassphraseError,
)
from tether.pki.keys import decrypt_private_key
from tether.pki.store import CaDirectory, init_issuing, init_root, write_new_file

ROOT_PASS = "root passphrase 1"
CA_PASS = "issuing passphrase 1"


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.fixture
def root_dir(tmp_path: Path) -> CaDirectory:
    return init_root(tmp_path / "root", ROOT_PASS, common_name="Store Root")


def test_init_root_layout(root_dir: CaDirectory) -> None:
    path = root_dir.path
    assert sorted(p.name for p in path.iterdir()) == [
        "ca.crt.pem",
        "ca.json",
        "ca.key.pem",
        "crl.pem",
        "revoked.json",
    ]
    meta = json.loads((path / "ca.json").read_text())
    assert meta == {
        "version": 1,
        "kind": "root",
        "role": None,
        "key": {"type": "file", "path": "ca.key.pem"},
    }
    key_bytes = (path / "ca.key.pem").read_bytes()
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in key_bytes and b"BEGIN PRIVATE KEY" not in key_bytes
    assert stat.S_IMODE((path / "ca.key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    key = decrypt_private_key(key_bytes, ROOT_PASS)
    assert key.public_key() == root_dir.certificate.public_key()
    crl = x509.load_pem_x509_crl((path / "crl.pem").read_bytes())
    assert crl.is_signature_valid(root_dir.certificate.public_key())  # type: ignore[arg-type]
    assert not list(path.parent.glob(".*"))  # no temporary leftovers


def test_an_existing_ca_directory_is_never_overwritten(root_dir: CaDirectory) -> None:
    before = _snapshot(root_dir.path)
    with pytest.raises(CaDirectoryExistsError):
        init_root(root_dir.path, ROOT_PASS)
    assert _snapshot(root_dir.path) == before


def test_a_non_empty_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(CaDirectoryExistsError):
        init_root(target, ROOT_PASS)
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_an_empty_directory_is_used(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    assert init_root(target, ROOT_PASS).kind == "root"


def test_bad_inputs_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(WeakPassphraseError):
        init_root(tmp_path / "a", "short")
    with pytest.raises(InvalidNameError):
        init_root(tmp_path / "b", ROOT_PASS, common_name="bad\nname")
    assert list(tmp_path.iterdir()) == []


def test_issuing_ca_directory(root_dir: CaDirectory, tmp_path: Path) -> None:
    ca_dir = init_issuing(
        tmp_path / "dev", root_dir, ROOT_PASS, CA_PASS, common_name="Dev CA", role=Role.DEVICE
    )
    meta = json.loads((ca_dir.path / "ca.json").read_text())
    assert meta["kind"] == "issuing" and meta["role"] == "device"
    assert ca_dir.root_certificate() == root_dir.certificate
    ca = ca_dir.issuing(CA_PASS)
    cert = ca.issue_device_certificate(device_csr("d-1"), "d-1")
    verify_chain(cert, intermediates=[ca.certificate], roots=[root_dir.certificate])


def test_wrong_root_passphrase_writes_nothing(root_dir: CaDirectory, tmp_path: Path) -> None:
    before = _snapshot(root_dir.path)
    with pytest.raises(WrongPassphraseError):
        init_issuing(
            tmp_path / "dev", root_dir, "wrong passphrase", CA_PASS, common_name="X", role="device"
        )
    assert not (tmp_path / "dev").exists()
    assert not list(tmp_path.glob(".dev*"))
    assert _snapshot(root_dir.path) == before


def test_unknown_key_reference_is_a_configuration_error(root_dir: CaDirectory) -> None:
    meta_path = root_dir.path / "ca.json"
    meta = json.loads(meta_path.read_text())
    meta["key"] = {"type": "pkcs11", "uri": "pkcs11:token=x"}
    meta_path.write_text(json.dumps(meta))
    opened = CaDirectory.open(root_dir.path)
    with pytest.raises(UnknownKeyReferenceError) as info:
        opened.root(ROOT_PASS)
    assert isinstance(info.value, ConfigurationError)


def test_key_path_must_stay_inside_the_directory(root_dir: CaDirectory) -> None:
    meta_path = root_dir.path / "ca.json"
    meta = json.loads(meta_path.read_text())
    meta["key"] = {"type": "file", "path": "../elsewhere.pem"}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CaDirectoryError):
        CaDirectory.open(root_dir.path).root(ROOT_PASS)


def test_missing_and_damaged_directories(tmp_path: Path, root_dir: CaDirectory) -> None:
    with pytest.raises(CaDirectoryNotFoundError):
        CaDirectory.open(tmp_path / "nope")
    (root_dir.path / "ca.json").write_text("{not json")
    with pytest.raises(CaDirectoryError):
        CaDirectory.open(root_dir.path)


def test_revocation_updates_list_and_crl(root_dir: CaDirectory, tmp_path: Path) -> None:
    ca_dir = init_issuing(
        tmp_path / "dev", root_dir, ROOT_PASS, CA_PASS, common_name="Dev CA", role=Role.DEVICE
    )
    cert = ca_dir.issuing(CA_PASS).issue_device_certificate(device_csr("d-2"), "d-2")
    crl = ca_dir.revoke(cert, CA_PASS, reason=x509.ReasonFlags.key_compromise)
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    on_disk = x509.load_pem_x509_crl((ca_dir.path / "crl.pem").read_bytes())
    assert on_disk.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    entries = ca_dir.revoked()
    assert [e.serial_number for e in entries] == [cert.serial_number]
    assert entries[0].reason is x509.ReasonFlags.key_compromise

    before = _snapshot(ca_dir.path)
    with pytest.raises(AlreadyRevokedError):
        ca_dir.revoke(cert, CA_PASS)
    other = root_dir.root(ROOT_PASS).create_issuing_ca(common_name="Other", role=Role.DEVICE)
    stranger = other.issue_device_certificate(device_csr("d-3"), "d-3")
    with pytest.raises(NotIssuedByThisCaError):
        ca_dir.revoke(stranger, CA_PASS)
    with pytest.raises(WrongPassphraseError):
        ca_dir.revoke(cert, "wrong passphrase")
    assert _snapshot(ca_dir.path) == before

    # the root revokes the issuing CA; a leaf is not an issuing CA
    root_crl = root_dir.revoke(ca_dir.certificate, ROOT_PASS, require_ca=True)
    assert root_crl.get_revoked_certificate_by_serial_number(ca_dir.certificate.serial_number)
    refreshed = ca_dir.refresh_crl(CA_PASS)
    assert len(refreshed) == 1


def test_write_new_file_never_clobbers(tmp_path: Path) -> None:
    target = tmp_path / "out.pem"
    write_new_file(target, b"one")
    with pytest.raises(CaDirectoryExistsError):
        write_new_file(target, b"two")
    assert target.read_bytes() == b"one"
    write_new_file(tmp_path / "k.pem", b"secret", mode=0o600)
    assert stat.S_IMODE((tmp_path / "k.pem").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem", "out.pem"]
