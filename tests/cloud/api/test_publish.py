"""CRLs and OCSP over plain HTTP, judged by openssl, for a certificate revoked through the API.

One ``tether cloud serve`` for the module: the online device CA issues two console devices
(their certificates name the CRL distribution point and the OCSP responder), the remote CLI
revokes one by serial number, and ``openssl crl``, ``openssl verify -crl_check`` and
``openssl ocsp`` read what the cloud publishes.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.x509 import ocsp

from tests.cli.test_cloud_serve import (
    SECRETS,
    TOKEN_RE,
    _kill,
    _read_until,
    tether,
)
from tests.device.broker import free_port
from tests.support.cli import cli_env, tether_command
from tether.pki import sha256_fingerprint
from tether.pki.store import CaDirectory, pem


@dataclass(frozen=True)
class Served:
    data: Path
    api: str
    publish: str
    token_file: Path
    online_ca: Path
    work: Path

    def remote(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        """``tether cloud ARGS`` through the admin API."""
        where = ("--url", self.api, "--token-file", self.token_file,
                 "--ca-file", self.data / "pinned-ca.pem")  # fmt: skip
        return tether("cloud", *args, *where)


@pytest.fixture(scope="module")
def served(ca_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("publish")
    data = work / "data"
    publish_port = free_port()
    token = _init_with_publish(data, ca_dirs, publish_port)
    token_file = work / "admin.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    server = subprocess.Popen(
        tether_command("cloud", "serve", data, "--port", "0", "--api-port", "0",
                       "--metrics-port", "0", "--api-metrics-port", "0", "--workers", "1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=cli_env(SECRETS, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        api_port = int(
            _read_until(server.stdout, r"admin API.*https://127\.0\.0\.1:(\d+)", deadline)[1]
        )
        # serve says where the web console is (its own line, for a person to open).
        _read_until(
            server.stdout, rf"web console https://127\.0\.0\.1:{api_port}/console$", deadline
        )
        _read_until(server.stdout, rf"CRLs and OCSP http://127\.0\.0\.1:{publish_port}/", deadline)
        online = work / "online-ca.pem"
        online.write_bytes(pem(CaDirectory.open(ca_dirs["device"]).certificate))
        yield Served(
            data=data,
            api=f"https://127.0.0.1:{api_port}",
            publish=f"http://127.0.0.1:{publish_port}",
            token_file=token_file,
            online_ca=online,
            work=work,
        )
    finally:
        _kill(server)


def _init_with_publish(data: Path, ca_dirs: dict[str, Path], port: int) -> str:
    done = tether(
        "cloud", "init", data, "--server-ca", ca_dirs["server"], "--device-ca", ca_dirs["device"],
        "--publish-port", str(port),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return TOKEN_RE.findall(done.stdout)[0]


def _console_device(served: Served, serial: str) -> Path:
    token = served.token_file.read_text().strip()
    with httpx.Client(
        base_url=served.api,
        verify=ssl.create_default_context(cafile=str(served.data / "pinned-ca.pem")),
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as http:
        made = http.post("/api/v1/devices", json={"serial": serial})
    assert made.status_code == 201, made.text
    path = served.work / f"{serial}.pem"
    path.write_text(made.json()["certificate_pem"])
    return path


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_certificate_revoked_through_the_api_is_revoked_for_openssl(served: Served) -> None:
    revoked_path = _console_device(served, "CRL-REVOKED")
    good_path = _console_device(served, "CRL-GOOD")
    revoked = x509.load_pem_x509_certificate(revoked_path.read_bytes())
    online_fp = sha256_fingerprint(x509.load_pem_x509_certificate(served.online_ca.read_bytes()))

    # The certificate says where its revocation data is, as a plain http:// URL.
    points = revoked.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    crl_url = points[0].full_name[0].value
    assert crl_url == f"{served.publish}/crl/{online_fp}.crl"
    aia = revoked.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [a.access_location.value for a in aia] == [f"{served.publish}/ocsp"]

    serial_hex = format(revoked.serial_number, "X")
    done = served.remote("revoke", "--serial-number", serial_hex, "--reason", "key_compromise")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sha256_fingerprint(revoked) in done.stdout

    crl_der = httpx.get(crl_url, timeout=30)
    assert crl_der.status_code == 200
    assert crl_der.headers["content-type"] == "application/pkix-crl"
    (served.work / "crl.der").write_bytes(crl_der.content)
    text = openssl("crl", "-inform", "DER", "-in", served.work / "crl.der", "-noout", "-text")
    assert text.returncode == 0, text.stderr
    assert serial_hex in text.stdout.replace(":", "").upper() and "Key Compromise" in text.stdout
    pem = openssl("crl", "-inform", "DER", "-in", served.work / "crl.der",
                  "-out", served.work / "crl.pem")  # fmt: skip
    assert pem.returncode == 0, pem.stderr

    chain = served.work / "online-chain.pem"
    root = (served.data / "root-ca.pem").read_bytes()
    chain.write_bytes(served.online_ca.read_bytes() + root)
    refused = openssl("verify", "-crl_check", "-CAfile", chain, "-CRLfile", served.work / "crl.pem",
                      revoked_path)  # fmt: skip
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr
    accepted = openssl("verify", "-crl_check", "-CAfile", chain, "-CRLfile",
                       served.work / "crl.pem", good_path)  # fmt: skip
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr

    for path, status in ((revoked_path, "revoked"), (good_path, "good")):
        answer = openssl("ocsp", "-issuer", served.online_ca, "-cert", path, "-url",
                         f"{served.publish}/ocsp", "-CAfile", chain, "-resp_text")  # fmt: skip
        assert answer.returncode == 0, answer.stdout + answer.stderr
        assert f"{path}: {status}" in answer.stdout, answer.stdout
        assert "Response verify OK" in answer.stderr + answer.stdout


def test_the_remote_cli_reads_what_the_revocation_did(served: Served) -> None:
    path = _console_device(served, "CRL-AUDITED")
    fingerprint = sha256_fingerprint(x509.load_pem_x509_certificate(path.read_bytes()))
    done = served.remote("revoke", "--fingerprint", fingerprint, "--reason", "superseded", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["revocation_reason"] == "superseded"
    log = served.remote("audit-log", "--target", fingerprint, "--json")
    assert log.returncode == 0, log.stderr
    entries = json.loads(log.stdout)["items"]
    assert entries[0]["action"] == "certificate.revoke"
    assert entries[0]["details"]["reason"] == "superseded"  # one spelling, as the API takes it
    devices = served.remote("devices", "--search", "CRL-AUDITED", "--json")
    assert devices.returncode == 0, devices.stderr
    assert json.loads(devices.stdout)["items"][0]["state"] == "no valid certificate"
    local = tether("cloud", "devices", served.data, "--search", "CRL-AUDITED", "--json")
    assert json.loads(local.stdout)["items"][0]["state"] == "no valid certificate"


def test_an_unknown_ocsp_request_is_refused_and_junk_is_malformed(served: Served) -> None:
    junk = httpx.post(f"{served.publish}/ocsp", content=b"\x30\x03junk",
                      headers={"Content-Type": "application/ocsp-request"}, timeout=30)  # fmt: skip
    assert junk.status_code == 200
    assert ocsp.load_der_ocsp_response(junk.content).response_status is (
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )
    big = httpx.post(f"{served.publish}/ocsp", content=b"\x00" * 10_000, timeout=30)
    assert big.status_code == 413
    missing = httpx.get(f"{served.publish}/crl/{'0' * 64}.crl", timeout=30)
    assert missing.status_code == 404 and missing.json()["code"]
    # Nothing but revocation data on the plain-HTTP port: no admin API there.
    assert httpx.get(f"{served.publish}/api/v1/whoami", timeout=30).status_code == 404


# -- the remote CLI's own refusals and its config file ---------------------------------------


def test_the_cli_config_file_names_the_cloud(served: Served) -> None:
    config = served.work / "cli.toml"
    config.write_text(
        f'url = "{served.api}"\ntoken_file = "{served.token_file}"\n'
        f'ca_file = "{served.data / "pinned-ca.pem"}"\n'
    )
    by_option = tether("cloud", "cas", "--json", "--config", config)
    assert by_option.returncode == 0, by_option.stderr
    remote = json.loads(by_option.stdout)
    local = json.loads(tether("cloud", "cas", served.data, "--json").stdout)
    assert remote == local and [ca["role"] for ca in remote] == ["device"]
    by_env = tether("cloud", "cas", "--json", env={"TETHER_CONFIG": str(config)})
    assert by_env.returncode == 0 and json.loads(by_env.stdout) == remote
    config.write_text('url = "x"\ndatadir = "/tmp"\n')
    typo = tether("cloud", "cas", "--config", config)
    assert (
        typo.returncode == 3 and "(cli_config_invalid)" in typo.stderr and "datadir" in typo.stderr
    )


def test_remote_refusals(served: Served) -> None:
    pinned = served.data / "pinned-ca.pem"
    no_ca = tether("cloud", "cas", "--url", served.api, "--token-file", served.token_file)
    assert no_ca.returncode == 2 and "--ca-file" in no_ca.stderr
    plain = tether("cloud", "cas", "--url", served.publish, "--token-file", served.token_file,
                   "--ca-file", pinned)  # fmt: skip
    assert plain.returncode == 2 and "https://" in plain.stderr
    both = tether("cloud", "cas", served.data, "--url", served.api)
    assert both.returncode == 2 and "not both" in both.stderr
    wrong = served.work / "wrong.token"
    wrong.write_text("tether_0123456789abcdef_" + "A" * 43 + "\n")
    refused = tether(
        "cloud", "cas", "--url", served.api, "--token-file", wrong, "--ca-file", pinned
    )
    assert refused.returncode == 3 and "Traceback" not in refused.stderr
    assert "error (" in refused.stderr
    serve_remote = tether("cloud", "serve", "--url", served.api)
    assert serve_remote.returncode == 2


def test_register_an_offline_signed_certificate_with_jit_checks(
    served: Served, ca_dirs: dict[str, Path]
) -> None:
    key = served.work / "offline.key"
    csr = served.work / "offline.csr"
    made = openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                   "-nodes", "-keyout", key, "-subj", "/CN=OFFLINE-1", "-out", csr)  # fmt: skip
    assert made.returncode == 0, made.stderr
    cert = served.work / "offline.pem"
    signed = tether("ca", "sign-csr", "--ca", ca_dirs["device"], csr, "--serial", "OFFLINE-1",
                    "--out", cert)  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    done = served.remote("register-cert", cert, "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["device"]["serial"] == "OFFLINE-1" and answer["certificate"]["state"] == "active"
    before = json.loads(served.remote("audit-log", "--json").stdout)["total"]
    again = served.remote("register-cert", cert)
    assert again.returncode == 3 and "exists" in again.stderr
    # A certificate of a CA the cloud does not know changes nothing.
    stranger_key = served.work / "stranger.key"
    stranger = served.work / "stranger.pem"
    self_signed = openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                          "-nodes", "-keyout", stranger_key, "-subj", "/CN=STRANGER-1",
                          "-days", "1", "-out", stranger)  # fmt: skip
    assert self_signed.returncode == 0, self_signed.stderr
    unknown = served.remote("register-cert", stranger)
    assert unknown.returncode == 3 and "Traceback" not in unknown.stderr
    assert json.loads(served.remote("audit-log", "--json").stdout)["total"] == before


def test_deactivate_and_activate_a_ca_remotely(served: Served) -> None:
    online_fp = sha256_fingerprint(x509.load_pem_x509_certificate(served.online_ca.read_bytes()))
    try:
        off = served.remote("deactivate-ca", online_fp)
        assert off.returncode == 0, off.stderr
        listed = json.loads(served.remote("cas", "--json").stdout)
        assert [ca["status"] for ca in listed] == ["inactive"]
    finally:
        on = served.remote("activate-ca", online_fp)
    assert on.returncode == 0, on.stderr
    assert [ca["status"] for ca in json.loads(served.remote("cas", "--json").stdout)] == ["active"]
