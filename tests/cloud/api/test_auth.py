"""Every admin call needs a valid admin credential; the OpenAPI description is published."""

from __future__ import annotations

import re

import pytest

from tests.cloud.api.conftest import Api, snapshot

FAKE_FINGERPRINT = "ab" * 32


def _admin_operations(api: Api) -> list[tuple[str, str]]:
    spec = api.anonymous.get("/openapi.json").json()
    operations = []
    for path, methods in spec["paths"].items():
        if not path.startswith("/api/"):
            continue
        concrete = re.sub(r"\{fingerprint\}", FAKE_FINGERPRINT, path)
        concrete = re.sub(r"\{serial\}", "DEV-1", concrete)
        operations.extend((method.upper(), concrete) for method in methods)
    return operations


def test_openapi_is_published_with_the_bearer_scheme(api: Api) -> None:
    response = api.anonymous.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["info"]["title"] == "Tether admin API"
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert "/api/v1/devices" in spec["paths"]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer tether_0123456789abcdef_" + "A" * 43,  # well-formed, unknown token id
        "Bearer not-a-token",
        "Basic YWRtaW46YWRtaW4=",
    ],
    ids=["missing", "unknown", "malformed", "basic"],
)
def test_every_admin_endpoint_answers_401_without_a_valid_credential(
    api: Api, authorization: str | None
) -> None:
    before = snapshot(api.registry)
    operations = _admin_operations(api)
    assert len(operations) >= 15
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in operations:
        response = api.anonymous.request(method, path, headers=headers, json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["code"] == "admin_credential_invalid"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    after = snapshot(api.registry)
    assert (after.devices, after.certificates, after.cas) == (
        before.devices,
        before.certificates,
        before.cas,
    )
    # Nothing changed but the audit of the failed credentials: one row for the address.
    new = api.registry.audit_after(before.last_audit)
    assert {e.action for e in new} <= {"api.auth_failed"}
    assert len(new) == (0 if authorization is None else 1)


def test_a_right_token_id_with_a_wrong_secret_is_refused(api: Api) -> None:
    token_id = api.token.split("_")[1]
    wrong = f"tether_{token_id}_{'B' * 43}"
    response = api.anonymous.get("/api/v1/whoami", headers={"Authorization": f"Bearer {wrong}"})
    assert response.status_code == 401
    assert api.http.get("/api/v1/whoami").json() == {"name": "alice"}


def test_the_token_is_stored_only_as_a_hash(api: Api) -> None:
    database = api.cloud.settings.data_dir / "registry.db"
    secret = api.token.split("_", 2)[2].encode()
    raw = b"".join(p.read_bytes() for p in database.parent.glob("registry.db*"))
    assert secret not in raw
    assert api.token.encode() not in raw
    (admin,) = [a for a in api.registry.list_admins() if a.name == "alice"]
    assert len(admin.token_hash) == 32 and len(admin.salt) == 16


def test_admin_responses_are_never_cached(api: Api) -> None:
    assert api.http.get("/api/v1/devices").headers["Cache-Control"] == "no-store"
    assert api.anonymous.get("/api/v1/devices").headers["Cache-Control"] == "no-store"
