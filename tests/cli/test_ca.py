"""`tether ca` end to end: real subprocesses, real openssl as the peer, pkilint as the judge."""

from __future__ import annotations

import functools
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from tests.pki.util import pkilint_cert, pkilint_crl
from tests.support.cli import tether as run_tether
from tether.pki import load_certificate, verify_chain, verify_server_chain
from tether.pki.keys import decrypt_private_key

ROOT_PASS = "cli root passphrase"
CA_PASS = "cli issuing passphrase"
ENV = {"TETHER_ROOT_PASSPHRASE": ROOT_PASS, "TETHER_CA_PASSPHRASE": CA_PASS}
# Every command here gets both passphrases unless a test passes its own ``env``.
tether = functools.partial(run_tether, env=ENV)


def openssl(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def snapshot(*dirs: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for d in dirs for p in sorted(d.rglob("*")) if p.is_file()}


def make_csr(work: Path, name: str, subj: str, newkey: list[str]) -> Path:
    ok(openssl("req", "-new", *newkey, "-nodes", "-keyout", f"{name}.key", "-subj", subj,
               "-out", f"{name}.csr", cwd=work))  # fmt: skip
    return work / f"{name}.csr"


P256 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]


@dataclass(frozen=True)
class CliPki:
    work: Path
    root: Path
    dev: Path
    srv: Path
    svc: Path
    device_cert: Path
    server_cert: Path
    server_key: Path
    service_cert: Path
    service_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CliPki:
    work = tmp_path_factory.mktemp("cli-pki")
    ok(tether("ca", "init-root", work / "root", "--name", "CLI Root CA"))
    for role, name in (("device", "dev"), ("server", "srv"), ("service", "svc")):
        ok(tether("ca", "issue-intermediate", "--root", work / "root", "--role", role,
                  "--name", f"CLI {role} CA", work / name))  # fmt: skip
    csr = make_csr(work, "dev-001", "/CN=dev-001", P256)
    ok(tether("ca", "sign-csr", "--ca", work / "dev", csr, "--serial", "dev-001",
              "--out", work / "dev-001.crt", "--validity-days", "365"))  # fmt: skip
    ok(tether("ca", "issue-server", "--ca", work / "srv", "--dns", "gateway.tether.test",
              "--ip", "127.0.0.1", "--out-cert", work / "server.crt",
              "--out-key", work / "server.key"))  # fmt: skip
    ok(tether("ca", "issue-service", "--ca", work / "svc", "--name", "billing",
              "--out-cert", work / "service.crt", "--out-key", work / "service.key"))  # fmt: skip
    return CliPki(
        work=work,
        root=work / "root",
        dev=work / "dev",
        srv=work / "srv",
        svc=work / "svc",
        device_cert=work / "dev-001.crt",
        server_cert=work / "server.crt",
        server_key=work / "server.key",
        service_cert=work / "service.crt",
        service_key=work / "service.key",
    )


def _cert(path: Path) -> x509.Certificate:
    return load_certificate(path.read_bytes())


@pytest.mark.parametrize(
    ("leaf", "ca", "purpose"),
    [("device_cert", "dev", "sslclient"), ("service_cert", "svc", "sslclient"),
     ("server_cert", "srv", "sslserver")],
)  # fmt: skip
def test_cli_chain_passes_openssl_strict_verify(
    pki: CliPki, leaf: str, ca: str, purpose: str
) -> None:
    result = openssl(
        "verify", "-x509_strict", "-purpose", purpose,
        "-CAfile", pki.root / "ca.crt.pem",
        "-untrusted", getattr(pki, ca) / "ca.crt.pem",
        getattr(pki, leaf), cwd=pki.work,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_openssl_refuses_the_device_cert_as_a_server_cert(pki: CliPki) -> None:
    result = openssl("verify", "-x509_strict", "-purpose", "sslserver",
                     "-CAfile", pki.root / "ca.crt.pem", "-untrusted", pki.dev / "ca.crt.pem",
                     pki.device_cert, cwd=pki.work)  # fmt: skip
    assert result.returncode != 0


def test_cli_chain_passes_cryptography_path_validation(pki: CliPki) -> None:
    root = _cert(pki.root / "ca.crt.pem")
    dev = _cert(pki.dev / "ca.crt.pem")
    assert _cert(pki.dev / "root.crt.pem") == root
    device = _cert(pki.device_cert)
    assert verify_chain(device, intermediates=[dev], roots=[root]) == [device, dev, root]
    service = _cert(pki.service_cert)
    verify_chain(service, intermediates=[_cert(pki.svc / "ca.crt.pem")], roots=[root])
    server = _cert(pki.server_cert)
    verify_server_chain(
        server, name="gateway.tether.test", intermediates=[_cert(pki.srv / "ca.crt.pem")],
        roots=[root],
    )  # fmt: skip
    key = load_pem_private_key(pki.server_key.read_bytes(), None)
    assert key.public_key() == server.public_key()


def test_every_cli_certificate_passes_pkilint(pki: CliPki) -> None:
    cas = [pki.root, pki.dev, pki.srv, pki.svc]
    paths = [ca / "ca.crt.pem" for ca in cas] + [pki.device_cert, pki.server_cert, pki.service_cert]
    for path in paths:
        result = pkilint_cert(path)
        assert result.returncode == 0, f"{path}: {result.stdout}{result.stderr}"
    for crl, kind in ((pki.root / "crl.pem", "ARL"), (pki.dev / "crl.pem", "CRL")):
        result = pkilint_crl(crl, kind)
        assert result.returncode == 0, f"{crl}: {result.stdout}{result.stderr}"


def test_keys_at_rest(pki: CliPki) -> None:
    for ca in (pki.root, pki.dev):
        key_file = ca / "ca.key.pem"
        data = key_file.read_bytes()
        assert b"BEGIN PRIVATE KEY" not in data and b"BEGIN ENCRYPTED PRIVATE KEY" in data
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    decrypt_private_key((pki.root / "ca.key.pem").read_bytes(), ROOT_PASS)
    with pytest.raises(TypeError, match="encrypted"):
        load_pem_private_key((pki.root / "ca.key.pem").read_bytes(), None)
    with pytest.raises(ValueError):
        load_pem_private_key((pki.root / "ca.key.pem").read_bytes(), b"not it")
    for key in (pki.server_key, pki.service_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_passphrase_file_and_no_overwrite(tmp_path: Path) -> None:
    secret = tmp_path / "pass.txt"
    secret.write_text("from a file 123\n")
    env: dict[str, str] = {}  # no secret in the environment: only the file
    ok(tether("ca", "init-root", tmp_path / "r", "--passphrase-file", secret, env=env))
    decrypt_private_key((tmp_path / "r" / "ca.key.pem").read_bytes(), "from a file 123")
    before = snapshot(tmp_path / "r")
    again = tether("ca", "init-root", tmp_path / "r", "--passphrase-file", secret, env=env)
    assert again.returncode == 3
    assert "pki_already_exists" in again.stderr
    assert snapshot(tmp_path / "r") == before
    missing = tether("ca", "init-root", tmp_path / "r2", env=env)  # no secret, no tty
    assert missing.returncode == 3 and "TETHER_ROOT_PASSPHRASE" in missing.stderr
    assert not (tmp_path / "r2").exists()


# --- refusals: each exits 3 with its code and leaves every file as it was ----------------


def refused(pki: CliPki, result: subprocess.CompletedProcess[str], code: str, out: Path) -> None:
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"({code})" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


@pytest.fixture
def guard(pki: CliPki):
    before = snapshot(pki.root, pki.dev, pki.srv, pki.svc)
    yield
    assert snapshot(pki.root, pki.dev, pki.srv, pki.svc) == before


@pytest.mark.parametrize(
    ("newkey", "code"),
    [(["-newkey", "rsa:2048"], "pki_unsupported_key"),
     (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"], "pki_unsupported_key"),
     (["-newkey", "ed25519"], "pki_unsupported_key")],
)  # fmt: skip
def test_other_key_types_are_refused(
    pki: CliPki, guard: None, tmp_path: Path, newkey: list[str], code: str
) -> None:
    csr = make_csr(tmp_path, "other", "/CN=dev-001", newkey)
    out = tmp_path / "out.crt"
    result = tether("ca", "sign-csr", "--ca", pki.dev, csr, "--serial", "dev-001", "--out", out)
    refused(pki, result, code, out)


def test_bad_csr_signature_is_refused(pki: CliPki, guard: None, tmp_path: Path) -> None:
    csr = make_csr(tmp_path, "d", "/CN=dev-001", P256)
    der = bytearray(x509.load_pem_x509_csr(csr.read_bytes()).public_bytes(Encoding.DER))
    der[-2] ^= 0x01
    bad = tmp_path / "bad.der"
    bad.write_bytes(bytes(der))
    out = tmp_path / "out.crt"
    result = tether("ca", "sign-csr", "--ca", pki.dev, bad, "--serial", "dev-001", "--out", out)
    refused(pki, result, "pki_csr_bad_signature", out)


@pytest.mark.parametrize("shape", ["truncated-der", "truncated-pem", "garbage", "empty"])
def test_malformed_csrs_are_refused(pki: CliPki, guard: None, tmp_path: Path, shape: str) -> None:
    pem = make_csr(tmp_path, "d", "/CN=dev-001", P256).read_bytes()
    der = x509.load_pem_x509_csr(pem).public_bytes(Encoding.DER)
    data = {
        "truncated-der": der[: len(der) - 20],
        "truncated-pem": pem[: len(pem) // 2],
        "garbage": b"\x00\x01 not a csr",
        "empty": b"",
    }[shape]
    src = tmp_path / "in.csr"
    src.write_bytes(data)
    out = tmp_path / "out.crt"
    result = tether("ca", "sign-csr", "--ca", pki.dev, src, "--serial", "dev-001", "--out", out)
    refused(pki, result, "pki_malformed_input", out)


def test_oversized_csr_is_refused(pki: CliPki, guard: None, tmp_path: Path) -> None:
    src = tmp_path / "big.csr"
    src.write_bytes(make_csr(tmp_path, "d", "/CN=dev-001", P256).read_bytes() + b"\n" * 70_000)
    out = tmp_path / "out.crt"
    result = tether("ca", "sign-csr", "--ca", pki.dev, src, "--serial", "dev-001", "--out", out)
    refused(pki, result, "pki_input_too_large", out)


@pytest.mark.parametrize(
    "subj", ["/CN=dev-001/emailAddress=alice@example.com", "/CN=dev-001/O=Alice Smith", "/O=x"]
)
def test_pii_in_the_csr_subject_is_refused(
    pki: CliPki, guard: None, tmp_path: Path, subj: str
) -> None:
    csr = make_csr(tmp_path, "d", subj, P256)
    out = tmp_path / "out.crt"
    result = tether("ca", "sign-csr", "--ca", pki.dev, csr, "--serial", "dev-001", "--out", out)
    refused(pki, result, "pki_subject_not_allowed", out)
    assert "personal data" in result.stderr


@pytest.mark.parametrize("serial", ["alice@example.com", "-x", "a b", "x" * 65])
def test_invalid_serial_is_refused(pki: CliPki, guard: None, tmp_path: Path, serial: str) -> None:
    csr = make_csr(tmp_path, "d", "/CN=x", P256)
    out = tmp_path / "out.crt"
    result = tether("ca", "sign-csr", "--ca", pki.dev, csr, "--serial", serial, "--out", out)
    refused(pki, result, "pki_invalid_serial", out)


def test_validity_past_the_issuer_is_refused(pki: CliPki, guard: None, tmp_path: Path) -> None:
    csr = make_csr(tmp_path, "d", "/CN=dev-001", P256)
    out = tmp_path / "out.crt"
    result = tether("ca", "sign-csr", "--ca", pki.dev, csr, "--serial", "dev-001", "--out", out,
                    "--validity-days", "4000")  # fmt: skip
    refused(pki, result, "pki_validity_out_of_range", out)
    inter = tether("ca", "issue-intermediate", "--root", pki.root, "--role", "device",
                   "--name", "Long", "--validity-days", "9000", tmp_path / "long")  # fmt: skip
    refused(pki, inter, "pki_validity_out_of_range", tmp_path / "long")


def test_wrong_passphrase_is_refused(pki: CliPki, guard: None, tmp_path: Path) -> None:
    csr = make_csr(tmp_path, "d", "/CN=dev-001", P256)
    out = tmp_path / "out.crt"
    env = {**ENV, "TETHER_CA_PASSPHRASE": "not the passphrase"}
    result = tether("ca", "sign-csr", "--ca", pki.dev, csr, "--serial", "dev-001", "--out", out,
                    env=env)  # fmt: skip
    refused(pki, result, "pki_wrong_passphrase", out)
    root_env = {**ENV, "TETHER_ROOT_PASSPHRASE": "not the passphrase"}
    inter = tether("ca", "issue-intermediate", "--root", pki.root, "--role", "device",
                   "--name", "X", tmp_path / "x", env=root_env)  # fmt: skip
    refused(pki, inter, "pki_wrong_passphrase", tmp_path / "x")
    assert not list(tmp_path.glob(".x*"))


def test_role_is_enforced(pki: CliPki, guard: None, tmp_path: Path) -> None:
    csr = make_csr(tmp_path, "d", "/CN=dev-001", P256)
    out = tmp_path / "out.crt"
    result = tether("ca", "sign-csr", "--ca", pki.srv, csr, "--serial", "dev-001", "--out", out)
    refused(pki, result, "pki_role_mismatch", out)
    server = tether("ca", "issue-server", "--ca", pki.dev, "--dns", "a.example.com",
                    "--out-cert", out, "--out-key", tmp_path / "k")  # fmt: skip
    refused(pki, server, "pki_role_mismatch", tmp_path / "k")
    bad_role = tether("ca", "issue-intermediate", "--root", pki.root, "--role", "admin",
                      "--name", "X", tmp_path / "x")  # fmt: skip
    refused(pki, bad_role, "pki_invalid_name", tmp_path / "x")


def test_existing_output_is_not_overwritten(pki: CliPki, guard: None, tmp_path: Path) -> None:
    csr = make_csr(tmp_path, "d", "/CN=dev-001", P256)
    out = tmp_path / "taken.crt"
    out.write_bytes(b"keep me")
    result = tether("ca", "sign-csr", "--ca", pki.dev, csr, "--serial", "dev-001", "--out", out)
    assert result.returncode == 3 and "pki_already_exists" in result.stderr
    assert out.read_bytes() == b"keep me"


# --- revocation ---------------------------------------------------------------------------


def test_revoke_crl_and_revoke_intermediate(tmp_path: Path) -> None:
    ok(tether("ca", "init-root", tmp_path / "root"))
    ok(tether("ca", "issue-intermediate", "--root", tmp_path / "root", "--role", "factory",
              "--name", "Line 1", tmp_path / "f1"))  # fmt: skip
    csr = make_csr(tmp_path, "u", "/CN=unit-1", P256)
    ok(tether("ca", "sign-csr", "--ca", tmp_path / "f1", csr, "--serial", "unit-1",
              "--out", tmp_path / "unit-1.crt"))  # fmt: skip
    cert = _cert(tmp_path / "unit-1.crt")

    bad_reason = tether("ca", "revoke", "--ca", tmp_path / "f1", tmp_path / "unit-1.crt",
                        "--reason", "because")  # fmt: skip
    assert bad_reason.returncode == 3 and "pki_unknown_reason" in bad_reason.stderr

    ok(tether("ca", "revoke", "--ca", tmp_path / "f1", tmp_path / "unit-1.crt",
              "--reason", "key_compromise"))  # fmt: skip
    crl = x509.load_pem_x509_crl((tmp_path / "f1" / "crl.pem").read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None
    again = tether("ca", "revoke", "--ca", tmp_path / "f1", tmp_path / "unit-1.crt",
                   "--reason", "superseded")  # fmt: skip
    assert again.returncode == 3 and "pki_already_revoked" in again.stderr

    ok(tether("ca", "crl", "--ca", tmp_path / "f1", "--out", tmp_path / "f1.crl"))
    published = x509.load_pem_x509_crl((tmp_path / "f1.crl").read_bytes())
    assert published.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    issuing = _cert(tmp_path / "f1" / "ca.crt.pem")
    assert published.is_signature_valid(issuing.public_key())  # type: ignore[arg-type]

    # a leaf is not an issuing CA; the issuing CA is revoked on the root's CRL
    not_ca = tether("ca", "revoke-intermediate", "--root", tmp_path / "root",
                    tmp_path / "unit-1.crt")  # fmt: skip
    assert not_ca.returncode == 3 and "pki_not_issued_by_ca" in not_ca.stderr
    ok(tether("ca", "revoke-intermediate", "--root", tmp_path / "root",
              tmp_path / "f1" / "ca.crt.pem", "--reason", "ca_compromise"))  # fmt: skip
    root_crl = x509.load_pem_x509_crl((tmp_path / "root" / "crl.pem").read_bytes())
    assert root_crl.get_revoked_certificate_by_serial_number(issuing.serial_number) is not None
    root_cert = _cert(tmp_path / "root" / "ca.crt.pem")
    assert root_crl.is_signature_valid(root_cert.public_key())  # type: ignore[arg-type]

    # openssl agrees: with CRL checking the revoked issuing CA breaks the device's chain
    crls = tmp_path / "crls.pem"
    crls.write_bytes(
        (tmp_path / "root" / "crl.pem").read_bytes() + (tmp_path / "f1.crl").read_bytes()
    )
    check = openssl("verify", "-crl_check_all", "-CRLfile", crls, "-CAfile",
                    tmp_path / "root" / "ca.crt.pem", "-untrusted", tmp_path / "f1" / "ca.crt.pem",
                    tmp_path / "unit-1.crt", cwd=tmp_path)  # fmt: skip
    assert check.returncode != 0 and "revoked" in (check.stdout + check.stderr)


def test_an_issuing_ca_names_where_the_root_crl_is(pki: CliPki, tmp_path: Path) -> None:
    url = "http://127.0.0.1:8080/crl/root.crl"
    ok(tether("ca", "issue-intermediate", "--root", pki.root, "--role", "factory",
              "--name", "With CDP", "--root-crl-url", url, tmp_path / "cdp"))  # fmt: skip
    cert = _cert(tmp_path / "cdp" / "ca.crt.pem")
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [p.full_name[0].value for p in points] == [url]  # type: ignore[index]
    assert "0 error(s)" in ok(tether("lint", tmp_path / "cdp" / "ca.crt.pem")).stdout
