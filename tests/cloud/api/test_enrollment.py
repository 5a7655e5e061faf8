"""Claims, one-time enrollment tokens and "renew now" through the admin API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.cloud.api.conftest import ADMIN, Api, snapshot
from tests.cloud.enrollment.conftest import csr_pem
from tether.cloud.api.schemas import KEY_ESCROW_WARNING
from tether.cloud.enrollment.service import token_hash
from tether.cloud.registry import Provisioning
from tether.pki import generate_key


def _actions(api: Api, action: str) -> list[tuple[str, str]]:
    page = api.registry.list_audit(limit=200).items
    return [(a.actor, a.target) for a in page if a.action == action]


def test_claims_tokens_and_renew_now(api: Api) -> None:
    made = api.http.post(
        "/api/v1/claims", json={"name": "line-9", "serials": ["L9-1", "L9-2"], "valid_for": 48}
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["private_key_pem"].startswith("-----BEGIN PRIVATE KEY-----")
    assert body["key_escrow_warning"] == KEY_ESCROW_WARNING
    certificate = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "claim.line-9"
    )
    claim = body["claim"]
    assert claim["serials"] == ["L9-1", "L9-2"] and claim["enrollments"] == 0
    left = datetime.fromisoformat(claim["expires_at"]) - datetime.now(UTC)
    assert timedelta(hours=47) < left <= timedelta(hours=48)
    assert (ADMIN, "line-9") in _actions(api, "claim.add")

    # With a CSR the key stays where it was made: no key, no warning.
    csr = csr_pem(generate_key(), "claim.line-10").decode()
    by_csr = api.http.post(
        "/api/v1/claims", json={"name": "line-10", "max_enrollments": 5, "csr_pem": csr}
    )
    assert by_csr.status_code == 201, by_csr.text
    assert by_csr.json()["private_key_pem"] is None
    assert by_csr.json()["key_escrow_warning"] is None
    listed = api.http.get("/api/v1/claims").json()
    assert [(c["name"], c["max_enrollments"]) for c in listed] == [("line-10", 5), ("line-9", None)]

    token = api.http.post("/api/v1/enrollment-tokens", json={"serial": "TOK-9", "valid_for": 2})
    assert token.status_code == 201, token.text
    issued = token.json()
    assert api.registry.enrollment_token_serial(token_hash(issued["token"])) == "TOK-9"
    assert (ADMIN, "TOK-9") in _actions(api, "enrollment_token.add")

    api.registry.add_device("RENEW-1", provisioning=Provisioning.CONSOLE, actor="t")
    renew = api.http.post("/api/v1/devices/RENEW-1/renew-now")
    assert renew.status_code == 200 and renew.json() == {"serial": "RENEW-1", "requested": True}
    assert _actions(api, "device.renew_requested") == [(ADMIN, "RENEW-1")]


def test_refusals_change_nothing(api: Api) -> None:
    api.http.post("/api/v1/claims", json={"name": "taken", "max_enrollments": 1})
    before = (snapshot(api.registry), api.registry.list_claims())

    def refused(path: str, body: dict[str, object] | None, status: int, code: str) -> None:
        response = api.http.post(path, json=body)
        assert response.status_code == status, response.text
        assert response.json()["code"] == code, response.text

    assert api.anonymous.post("/api/v1/claims", json={"name": "x"}).status_code == 401
    assert api.anonymous.get("/api/v1/claims").status_code == 401
    assert api.anonymous.post("/api/v1/enrollment-tokens", json={"serial": "A"}).status_code == 401
    assert api.anonymous.post("/api/v1/devices/NOPE/renew-now").status_code == 401
    refused("/api/v1/devices/NOPE/renew-now", None, 404, "device_not_found")
    for hours in (0, -1, 24 * 3650 + 1, 10**20):
        refused("/api/v1/claims", {"name": "c", "valid_for": hours}, 400, "valid_for_invalid")
    refused("/api/v1/claims", {"name": "c", "valid_for": "soon"}, 422, "invalid_request")
    refused("/api/v1/claims", {"name": "taken"}, 409, "claim_exists")
    refused("/api/v1/claims", {"name": "c", "serials": ["a b"]}, 422, "pki_invalid_serial")
    refused("/api/v1/claims", {"name": "c", "max_enrollments": 0}, 400, "invalid_registry_input")
    refused("/api/v1/enrollment-tokens", {"serial": "A", "valid_for": 0}, 400, "valid_for_invalid")
    refused("/api/v1/enrollment-tokens", {"serial": "A", "valid_for": 24 * 366}, 400,
            "valid_for_invalid")  # fmt: skip
    refused("/api/v1/enrollment-tokens", {"serial": "a/b"}, 422, "pki_invalid_serial")
    assert (snapshot(api.registry), api.registry.list_claims()) == before
