"""EST (RFC 7030) with clients no one here wrote: curl for HTTPS with mutual TLS, openssl
for the CSRs and for parsing the PKCS#7 answers; against a running cloud."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from tests.cloud.conftest import ACTOR, Cloud
from tests.support.pki import Issued
from tether.cloud.enrollment import EnrollmentService
from tether.cloud.enrollment.est import EstServer
from tether.cloud.operations import AdminOperations
from tether.pki import generate_key

CURL_TIMEOUT = "10"


@dataclass
class Est:
    """A running EST listener next to a running cloud, and curl/openssl helpers."""

    cloud: Cloud
    server: EstServer
    work: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}/.well-known/est/"

    def curl(
        self, operation: str, *, body: Path | None = None, cert: Path | None = None,
        key: Path | None = None, token: str | None = None,
    ) -> tuple[int, bytes, str]:  # fmt: skip
        """(status, body, Tether-Error-Code header) of one EST request made by curl."""
        out = self.work / f"out-{operation}"
        headers = self.work / f"headers-{operation}"
        command = [
            "curl", "--silent", "--show-error", "--max-time", CURL_TIMEOUT,
            "--cacert", str(self.cloud.settings.pinned_ca), "--output", str(out),
            "--dump-header", str(headers), "--write-out", "%{http_code}",
        ]  # fmt: skip
        if cert is not None and key is not None:
            command += ["--cert", str(cert), "--key", str(key)]
        if token is not None:
            command += ["--header", f"Authorization: Bearer {token}"]
        if body is not None:
            command += [
                "--header", "Content-Type: application/pkcs10",
                "--header", "Content-Transfer-Encoding: base64",
                "--data-binary", f"@{body}",
            ]  # fmt: skip
        command.append(self.url + operation)
        status = subprocess.run(command, capture_output=True, check=True, timeout=20).stdout
        code = ""
        for line in headers.read_text().splitlines():
            if line.lower().startswith("tether-error-code:"):
                code = line.split(":", 1)[1].strip()
        return int(status), out.read_bytes(), code

    def csr(self, key_path: Path, serial: str | None, name: str) -> Path:
        """An openssl-made CSR (base64 DER, as EST sends it) for the key in ``key_path``."""
        der = self.work / f"{name}.csr.der"
        subject = f"/CN={serial}" if serial else "/"
        subprocess.run(
            ["openssl", "req", "-new", "-key", str(key_path), "-subj", subject, "-sha256",
             "-outform", "DER", "-out", str(der)],
            check=True, capture_output=True, timeout=20,
        )  # fmt: skip
        encoded = self.work / f"{name}.csr.b64"
        subprocess.run(
            ["openssl", "base64", "-in", str(der), "-out", str(encoded)],
            check=True, timeout=20,
        )  # fmt: skip
        return encoded

    def certificates(self, answer: bytes, name: str) -> list[x509.Certificate]:
        """The certificates of a base64 PKCS#7 answer, as `openssl pkcs7 -print_certs` reads it."""
        path = self.work / f"{name}.p7.b64"
        path.write_bytes(answer)
        printed = subprocess.run(
            ["openssl", "pkcs7", "-in", str(path), "-inform", "PEM", "-print_certs"],
            capture_output=True, check=False, timeout=20,
        )  # fmt: skip
        if printed.returncode != 0:  # bare base64 (no PEM armour): decode first
            der = self.work / f"{name}.p7.der"
            subprocess.run(
                ["openssl", "base64", "-d", "-in", str(path), "-out", str(der)],
                check=True, timeout=20,
            )  # fmt: skip
            printed = subprocess.run(
                ["openssl", "pkcs7", "-in", str(der), "-inform", "DER", "-print_certs"],
                capture_output=True, check=True, timeout=20,
            )  # fmt: skip
        return x509.load_pem_x509_certificates(printed.stdout)


@pytest.fixture
def est(cloud: Cloud, tmp_path: Path) -> Iterator[Est]:
    enrollment = EnrollmentService(
        cloud.registry, cloud.pki.device_ca, chain_extra=(cloud.pki.root.certificate,)
    )
    server = EstServer(
        enrollment,
        cloud.service.authority,
        certificate_chain=cloud.settings.server_chain,
        private_key=cloud.settings.server_key,
        port=0,
    )
    cloud.running.call(server.start())
    work = tmp_path / "est"
    work.mkdir()
    try:
        yield Est(cloud, server, work)
    finally:
        cloud.running.call(server.stop())


def test_cacerts_and_csrattrs(est: Est) -> None:
    status, body, _ = est.curl("cacerts")
    assert status == 200
    certificates = est.certificates(body, "cacerts")
    assert est.cloud.pki.device_ca.certificate in certificates
    status, body, _ = est.curl("csrattrs")
    assert status == 200
    parsed = subprocess.run(
        ["openssl", "asn1parse", "-inform", "PEM"],
        input=b"-----BEGIN X-----\n" + body + b"-----END X-----\n",
        capture_output=True, check=True, timeout=20,
    ).stdout.decode()  # fmt: skip
    assert "ecdsa-with-SHA256" in parsed and "prime256v1" in parsed


def test_factory_unit_enrolls_reenrolls_and_connects(est: Est) -> None:
    cloud = est.cloud
    key = generate_key()
    birth_cert = cloud.pki.factory_ca.issue_device_certificate_for_key(key.public_key(), "est-1")
    birth = Issued(birth_cert, key).write(est.work, "est-1-birth")
    status, body, code = est.curl(
        "simpleenroll", body=est.csr(birth.key_path, "est-1", "e1"),
        cert=birth.cert_path, key=birth.key_path,
    )  # fmt: skip
    assert (status, code) == (200, "")
    [operational] = est.certificates(body, "enrolled")
    assert operational.issuer == cloud.pki.device_ca.certificate.subject
    current = Issued(operational, key).write(est.work, "est-1-op")
    # The operational certificate connects to the gateway; the birth certificate is done.
    client = cloud.paho(current, "est-1")
    client.client.disconnect()
    client.client.loop_stop()
    # A retry with the birth certificate (a lost reply) gets the same certificate back.
    status, body, code = est.curl(
        "simpleenroll", body=est.csr(birth.key_path, "est-1", "e1b"),
        cert=birth.cert_path, key=birth.key_path,
    )  # fmt: skip
    assert (status, code) == (200, "") and est.certificates(body, "again") == [operational]
    # simplereenroll with the current certificate: same key, renewed.
    status, body, code = est.curl(
        "simplereenroll", body=est.csr(current.key_path, "est-1", "r1"),
        cert=current.cert_path, key=current.key_path,
    )  # fmt: skip
    assert (status, code) == (200, "")
    [renewed] = est.certificates(body, "renewed")
    assert renewed.public_key() == operational.public_key() and renewed != operational
    assert [k for *_, k in cloud.registry.certificate_history("est-1")] == ["enrolled", "renewed"]


def test_token_enrollment_and_its_replay(est: Est) -> None:
    admin = AdminOperations(
        est.cloud.registry,
        root_certificate=est.cloud.pki.root.certificate,
        online_ca=est.cloud.pki.device_ca,
    )
    token = admin.create_enrollment_token("est-tok", actor=ACTOR).token
    key = (
        Issued(est.cloud.pki.device_ca.certificate, generate_key()).write(est.work, "k").key_path
    )  # only the key file matters here
    request = est.csr(key, "est-tok", "t1")
    status, body, _ = est.curl("simpleenroll", body=request, token=token)
    assert status == 200
    [first] = est.certificates(body, "t1")
    status, body, _ = est.curl("simpleenroll", body=request, token=token)  # a retry
    assert status == 200 and est.certificates(body, "t1-again") == [first]
    other = Issued(first, generate_key()).write(est.work, "k2").key_path
    status, _, code = est.curl("simpleenroll", body=est.csr(other, "est-tok", "t2"), token=token)
    assert (status, code) == (403, "enrollment_token_used")


def test_est_refusals(est: Est) -> None:
    garbage = est.work / "garbage.b64"
    garbage.write_bytes(b"bm90IGEgQ1NS\n")  # base64 of "not a CSR"
    admin = AdminOperations(
        est.cloud.registry,
        root_certificate=est.cloud.pki.root.certificate,
        online_ca=est.cloud.pki.device_ca,
    )
    token = admin.create_enrollment_token("est-bad", actor=ACTOR).token
    status, _, code = est.curl("simpleenroll", body=garbage, token=token)
    assert (status, code) == (400, "pki_malformed_input")
    status, _, code = est.curl("simpleenroll", body=garbage)
    assert (status, code) == (401, "est_no_credential")
    p384 = est.work / "p384.key.pem"
    subprocess.run(
        ["openssl", "ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", str(p384)],
        check=True, timeout=20,
    )  # fmt: skip
    status, _, code = est.curl("simpleenroll", body=est.csr(p384, "est-bad", "p384"), token=token)
    assert (status, code) == (422, "pki_unsupported_key")  # policy: 422, as in the API
    status, _, code = est.curl("unknown-op")
    assert (status, code) == (404, "est_not_found")


def test_simplereenroll_refuses_another_ca_and_a_birth_certificate(est: Est) -> None:
    cloud = est.cloud
    service = cloud.service_identity("svc-est")  # a registered identity of another CA
    status, _, code = est.curl(
        "simplereenroll", body=est.csr(service.key_path, "svc-est", "svc"),
        cert=service.cert_path, key=service.key_path,
    )  # fmt: skip
    assert (status, code) == (403, "enrollment_not_allowed")
    key = generate_key()
    birth_cert = cloud.pki.factory_ca.issue_device_certificate_for_key(key.public_key(), "est-9")
    birth = Issued(birth_cert, key).write(est.work, "est-9-birth")
    status, _, code = est.curl(
        "simplereenroll", body=est.csr(birth.key_path, "est-9", "b9"),
        cert=birth.cert_path, key=birth.key_path,
    )  # fmt: skip
    assert (status, code) == (403, "renewal_wrong_ca")
