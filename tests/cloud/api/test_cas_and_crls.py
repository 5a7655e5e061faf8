"""CA registration with proof of possession, CA deactivation, and the CRLs the cloud serves."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.cloud.api.conftest import ADMIN, Api, snapshot
from tests.cloud.conftest import TIMEOUT
from tether.pki import IssuingCA, RevokedEntry, Role, SoftwareSigner, sha256_fingerprint
from tether.pki.store import pem
from tether.pki.verification import issue_verification_certificate


def _pem(cert: x509.Certificate) -> str:
    return pem(cert).decode()


@pytest.fixture
def vendor_ca(api: Api) -> IssuingCA:
    """A CA the cloud has never seen (as a vendor's factory CA would be)."""
    return api.cloud.pki.root.create_issuing_ca(common_name="Vendor Factory CA", role=Role.FACTORY)


def _code(api: Api) -> str:
    response = api.http.post("/api/v1/cas/registration-codes")
    assert response.status_code == 201, response.text
    body = response.json()
    assert datetime.fromisoformat(body["expires_at"]) > datetime.now(UTC)
    assert body["code"] in body["how_to"]
    return body["code"]


def _register(
    api: Api, ca_cert: x509.Certificate, verification: x509.Certificate, code: str
) -> httpx.Response:
    return api.http.post(
        "/api/v1/cas",
        json={
            "certificate_pem": _pem(ca_cert),
            "verification_certificate_pem": _pem(verification),
            "registration_code": code,
            "role": "factory",
            "allow_auto_registration": True,
        },
    )


def test_a_ca_is_registered_with_proof_of_possession_and_the_code_is_single_use(
    api: Api, vendor_ca: IssuingCA
) -> None:
    code = _code(api)
    proof = issue_verification_certificate(vendor_ca.certificate, vendor_ca.signer, code)
    response = _register(api, vendor_ca.certificate, proof, code)
    assert response.status_code == 201, response.text
    fingerprint = sha256_fingerprint(vendor_ca.certificate)
    assert response.json()["fingerprint"] == fingerprint
    assert response.json()["status"] == "active"
    assert api.http.get(f"/api/v1/cas/{fingerprint}").json()["role"] == "factory"
    assert fingerprint in {c["fingerprint"] for c in api.http.get("/api/v1/cas").json()}
    entry = api.http.get(f"/api/v1/audit?target={fingerprint}").json()["items"][0]
    assert (entry["action"], entry["actor"]) == ("ca.register", ADMIN)

    other = api.cloud.pki.root.create_issuing_ca(common_name="Second CA", role=Role.FACTORY)
    reuse = _register(
        api,
        other.certificate,
        issue_verification_certificate(other.certificate, other.signer, code),
        code,
    )
    assert reuse.status_code == 422 and reuse.json()["code"] == "registration_code_invalid"
    assert "already used" in reuse.json()["message"]


@pytest.mark.parametrize(
    "case", ["wrong-signer", "wrong-code", "unknown-code", "leaf-not-ca", "expired-code"]
)
def test_ca_registration_without_a_valid_proof_is_refused_and_changes_nothing(
    api: Api,
    vendor_ca: IssuingCA,
    case: str,
) -> None:
    code = _code(api)
    ca_cert, signer, signed_code, sent_code = vendor_ca.certificate, vendor_ca.signer, code, code
    if case == "wrong-signer":
        # The stranger CA's key signs a certificate naming the vendor CA: no possession.
        signer = api.cloud.pki.stranger_ca.signer
    elif case == "wrong-code":
        signed_code = "0" * 32
    elif case == "unknown-code":
        signed_code = sent_code = "f" * 32
    elif case == "leaf-not-ca":
        key_holder = api.cloud.pki.device("LEAF-1", ca=vendor_ca).write(api.cloud.files, "LEAF-1")
        ca_cert = key_holder.certificate
        signer = SoftwareSigner(key_holder.key)
    elif case == "expired-code":
        api.registry._clock = lambda: datetime.now(UTC) + timedelta(hours=2)  # type: ignore[method-assign]
    proof = issue_verification_certificate(ca_cert, signer, signed_code)
    before = snapshot(api.registry)
    response = _register(api, ca_cert, proof, sent_code)
    assert 400 <= response.status_code < 500, response.text
    expected = {
        "wrong-signer": "verification_certificate_invalid",
        "wrong-code": "verification_certificate_invalid",
        "unknown-code": "registration_code_invalid",
        "leaf-not-ca": "not_a_ca_certificate",
        "expired-code": "registration_code_invalid",
    }[case]
    assert response.json()["code"] == expected
    assert snapshot(api.registry) == before


def test_deactivating_a_ca_cuts_every_device_under_it_at_once(api: Api) -> None:
    device_a = api.cloud.console_device("CUT-A")
    device_b = api.cloud.console_device("CUT-B")
    sessions = [api.cloud.paho(device_a, "CUT-A"), api.cloud.paho(device_b, "CUT-B")]
    try:
        fingerprint = sha256_fingerprint(api.cloud.pki.device_ca.certificate)
        started = time.monotonic()
        response = api.http.post(f"/api/v1/cas/{fingerprint}/status", json={"status": "inactive"})
        assert response.status_code == 200 and response.json()["status"] == "inactive"
        for session in sessions:
            session.disconnects.get(timeout=TIMEOUT)
        assert time.monotonic() - started < 2.0
        assert not list(api.cloud.service.gateway.sessions())
    finally:
        for session in sessions:
            session.client.loop_stop()
    before = snapshot(api.registry)
    refused = api.http.post("/api/v1/devices", json={"serial": "AFTER-CUT"})
    assert refused.status_code == 409 and refused.json()["code"] == "online_ca_inactive"
    assert snapshot(api.registry) == before
    bad = api.http.post(f"/api/v1/cas/{fingerprint}/status", json={"status": "paused"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"


def test_the_online_ca_crl_lists_revocations_from_the_registry(api: Api) -> None:
    bundle = api.http.post("/api/v1/devices", json={"serial": "CRL-1"}).json()
    fingerprint = bundle["certificate"]["fingerprint"]
    api.http.post(
        f"/api/v1/certificates/{fingerprint}/revoke", json={"reason": "key_compromise"}
    ).raise_for_status()
    ca_fp = sha256_fingerprint(api.cloud.pki.device_ca.certificate)
    response = api.anonymous.get(f"/crl/{ca_fp}.crl")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(response.content)
    assert crl.is_signature_valid(api.cloud.pki.device_ca.certificate.public_key())  # type: ignore[arg-type]
    serial = int(bundle["certificate"]["serial_number"], 16)
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise
    )
    upload = api.http.put(
        f"/api/v1/cas/{ca_fp}/crl", json={"crl_pem": crl.public_bytes(Encoding.PEM).decode()}
    )
    assert upload.status_code == 409 and upload.json()["code"] == "crl_signed_by_cloud"


def test_root_and_foreign_crls_are_served_as_uploaded_and_checked(api: Api) -> None:
    root = api.cloud.pki.root
    assert api.anonymous.get("/crl/root.crl").json()["code"] == "crl_not_available"
    stranger = api.cloud.pki.stranger_ca
    root_crl = root.build_crl([RevokedEntry(stranger.certificate.serial_number, datetime.now(UTC))])
    before = snapshot(api.registry)
    forged = stranger.build_crl([])  # signed by the wrong CA
    refused = api.http.put(
        "/api/v1/crl/root", json={"crl_pem": forged.public_bytes(Encoding.PEM).decode()}
    )
    assert refused.status_code == 422 and refused.json()["code"] == "crl_rejected"
    garbage = api.http.put("/api/v1/crl/root", json={"crl_pem": "not a crl"})
    assert garbage.status_code == 400 and garbage.json()["code"] == "pki_malformed_input"
    assert snapshot(api.registry) == before
    ok = api.http.put(
        "/api/v1/crl/root", json={"crl_pem": root_crl.public_bytes(Encoding.PEM).decode()}
    )
    # The stranger CA is not registered: the CRL is published and revokes nothing here.
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"revoked_certificates": [], "revoked_cas": [], "not_registered": 1}
    served = api.anonymous.get("/crl/root.crl")
    assert served.status_code == 200 and served.content == root_crl.public_bytes(Encoding.DER)

    factory_fp = sha256_fingerprint(api.cloud.pki.factory_ca.certificate)
    missing = api.anonymous.get(f"/crl/{factory_fp}.crl")
    assert missing.status_code == 404 and missing.json()["code"] == "crl_not_available"
    factory_crl = api.cloud.pki.factory_ca.build_crl([])
    api.http.put(
        f"/api/v1/cas/{factory_fp}/crl",
        json={"crl_pem": factory_crl.public_bytes(Encoding.PEM).decode()},
    ).raise_for_status()
    assert api.anonymous.get(f"/crl/{factory_fp}.crl").content == factory_crl.public_bytes(
        Encoding.DER
    )
    # An older CRL than the one published would roll it back: refused, nothing changed.
    stale = api.cloud.pki.factory_ca.build_crl([], crl_number=1)
    rolled_back = api.http.put(
        f"/api/v1/cas/{factory_fp}/crl", json={"crl_pem": stale.public_bytes(Encoding.PEM).decode()}
    )
    assert rolled_back.status_code == 422 and rolled_back.json()["code"] == "crl_rejected"
    unknown = api.anonymous.get(f"/crl/{'ee' * 32}.crl")
    assert unknown.status_code == 404 and unknown.json()["code"] == "ca_not_registered"
    actions = {e["action"] for e in api.http.get("/api/v1/audit").json()["items"]}
    assert "crl.publish" in actions
