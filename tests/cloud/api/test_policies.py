"""Policies through the API: schema, versions, refusals that name the statement, attachments,
groups and attributes, a device's effective policy and the ``test`` question."""

from __future__ import annotations

from tests.cloud.api.conftest import ADMIN, Api, snapshot
from tests.cloud.api.test_console import _signed_in
from tether.cloud.registry import Provisioning

DOC = {
    "statements": [
        {"sid": "connect", "effect": "allow", "actions": ["connect"]},
        {"sid": "fw", "effect": "allow", "actions": ["subscribe", "receive"],
         "resources": ["groups/${group}/firmware"]},
        {"sid": "line", "effect": "allow", "actions": ["publish"],
         "resources": ["lines/${attr.line}/status"]},
    ]
}  # fmt: skip


def test_policies_round_trip_and_apply_to_a_device(api: Api) -> None:
    api.registry.add_device("API-POL-1", provisioning=Provisioning.CONSOLE, actor="t")
    schema = api.http.get("/api/v1/policies/schema")
    assert schema.status_code == 200 and schema.json()["title"] == "Tether policy document"
    assert api.anonymous.get("/api/v1/policies/schema").status_code == 401

    created = api.http.put("/api/v1/policies/fleet", json=DOC)
    assert created.status_code == 200, created.text
    assert created.json()["version"] == 1 and created.json()["created_by"] == ADMIN
    assert api.http.put("/api/v1/policies/fleet", json=DOC).json()["version"] == 1
    attached = api.http.post(
        "/api/v1/policies/fleet/attachments", json={"kind": "device", "target": "API-POL-1"}
    )
    assert attached.status_code == 201, attached.text
    assert api.http.put("/api/v1/devices/API-POL-1/groups/line-7").json() == ["line-7"]
    attrs = api.http.put("/api/v1/devices/API-POL-1/attributes/line", json={"value": "L7"})
    assert attrs.json() == {"line": "L7"}

    effective = api.http.get("/api/v1/devices/API-POL-1/policy").json()
    assert effective["groups"] == ["line-7"] and effective["policies"] == ["fleet"]
    assert {r["pattern"] for r in effective["rules"]} >= {
        "groups/line-7/firmware",
        "lines/L7/status",
    }

    asked = api.http.post(
        "/api/v1/policies/test",
        json={"name": "API-POL-1", "action": "subscribe", "resource": "groups/line-7/firmware"},
    ).json()
    assert asked["allowed"] and asked["statement"] == "fw" and asked["policy"] == "fleet"
    refused = api.http.post(
        "/api/v1/policies/test",
        json={"name": "API-POL-1", "action": "publish", "resource": "lines/L8/status"},
    ).json()
    assert not refused["allowed"] and "no statement allows it" in refused["explanation"]

    assert api.http.delete("/api/v1/policies/fleet").status_code == 409
    detached = api.http.delete("/api/v1/policies/fleet/attachments/device/API-POL-1")
    assert detached.status_code == 204
    assert api.http.delete("/api/v1/policies/fleet").status_code == 204
    assert api.http.get("/api/v1/policies/fleet").status_code == 404


def test_refusals_name_the_statement_and_change_nothing(api: Api) -> None:
    api.registry.add_device("API-POL-2", provisioning=Provisioning.CONSOLE, actor="t")
    before = snapshot(api.registry)
    bad = {"statements": [{"sid": "oops", "effect": "allow", "actions": ["publish"],
                           "resources": ["a/#/b"]}]}  # fmt: skip
    response = api.http.put("/api/v1/policies/fleet", json=bad)
    assert response.status_code == 400
    assert response.json()["code"] == "policy_invalid"
    assert 'statement "oops"' in response.json()["message"]
    assert api.http.put("/api/v1/policies/builtin:device", json=DOC).status_code == 400
    bad_value = api.http.put("/api/v1/devices/API-POL-2/attributes/line", json={"value": "a/b"})
    assert bad_value.status_code == 400
    assert api.http.put("/api/v1/devices/NOPE/groups/g").status_code == 404
    assert snapshot(api.registry) == before


def test_labels_attachments_and_a_services_policy_are_readable_and_reads_audit_nothing(
    api: Api,
) -> None:
    api.registry.add_device("API-POL-9", provisioning=Provisioning.CONSOLE, actor="t")
    assert api.http.get("/api/v1/devices/API-POL-9/groups").json() == []
    assert api.http.get("/api/v1/devices/API-POL-9/attributes").json() == {}
    assert api.http.put("/api/v1/devices/API-POL-9/groups/line-9").status_code == 200
    api.http.put("/api/v1/devices/API-POL-9/attributes/line", json={"value": "L9"})
    assert api.http.put("/api/v1/policies/fleet", json=DOC).status_code == 200
    for kind, target in (("device", "API-POL-9"), ("service", "reporting")):
        attached = api.http.post(
            "/api/v1/policies/fleet/attachments", json={"kind": kind, "target": target}
        )
        assert attached.status_code == 201, attached.text

    before = api.registry.last_audit_id()
    assert api.http.get("/api/v1/devices/API-POL-9/groups").json() == ["line-9"]
    assert api.http.get("/api/v1/devices/API-POL-9/attributes").json() == {"line": "L9"}
    every = api.http.get("/api/v1/policy-attachments").json()
    assert {(a["policy"], a["kind"], a["target"]) for a in every} == {
        ("fleet", "device", "API-POL-9"),
        ("fleet", "service", "reporting"),
    }
    services = api.http.get("/api/v1/policy-attachments", params={"kind": "service"}).json()
    assert [a["target"] for a in services] == ["reporting"]
    service = api.http.get("/api/v1/services/reporting/policy").json()
    assert (service["kind"], service["name"], service["policies"]) == (
        "service",
        "reporting",
        ["fleet"],
    )
    assert api.registry.last_audit_id() == before

    reads = ("/api/v1/devices/API-POL-9/groups", "/api/v1/devices/API-POL-9/attributes",
             "/api/v1/policy-attachments", "/api/v1/services/reporting/policy")  # fmt: skip
    assert all(api.anonymous.get(path).status_code == 401 for path in reads)
    for path in ("/api/v1/devices/NOPE-9/groups", "/api/v1/devices/NOPE-9/attributes"):
        missing = api.http.get(path)
        assert missing.status_code == 404 and missing.json()["code"] == "device_not_found"
    bad_kind = api.http.get("/api/v1/policy-attachments", params={"kind": "planet"})
    assert bad_kind.status_code in (400, 422), bad_kind.text


def test_the_provisioning_path_sets_groups_and_attributes_or_refuses_before_anything(
    api: Api,
) -> None:
    made = api.http.post(
        "/api/v1/devices",
        json={"serial": "API-POL-3", "groups": ["line-7"], "attributes": {"model": "X2"}},
    )
    assert made.status_code == 201, made.text
    assert api.registry.device_groups("API-POL-3") == ("line-7",)
    assert api.registry.device_attributes("API-POL-3") == {"model": "X2"}
    before = snapshot(api.registry)
    refused = api.http.post(
        "/api/v1/devices", json={"serial": "API-POL-4", "attributes": {"model": "a/b"}}
    )
    assert refused.status_code == 400 and "Attribute value" in refused.json()["message"]
    assert snapshot(api.registry) == before


def test_the_console_shows_the_effective_policy_and_edits_groups_and_attributes(
    api: Api,
) -> None:
    api.registry.add_device("WEB-POL-1", provisioning=Provisioning.CONSOLE, actor="t")
    client, csrf = _signed_in(api)
    page = client.get("/console/devices/WEB-POL-1")
    assert page.status_code == 200
    assert "builtin:device" in page.text and "devices/WEB-POL-1/+/#" in page.text
    added = client.post(
        "/console/devices/WEB-POL-1/groups", data={"group": "line-7", "csrf_token": csrf}
    )
    assert added.status_code == 303
    set_attr = client.post(
        "/console/devices/WEB-POL-1/attributes",
        data={"name": "model", "value": "X2", "csrf_token": csrf},
    )
    assert set_attr.status_code == 303
    page = client.get("/console/devices/WEB-POL-1")
    assert "line-7" in page.text and "model=X2" in page.text
    forged = client.post(
        "/console/devices/WEB-POL-1/groups", data={"group": "evil", "csrf_token": "x"}
    )
    assert forged.status_code == 403
    bad = client.post(
        "/console/devices/WEB-POL-1/attributes",
        data={"name": "model", "value": "a/b", "csrf_token": csrf},
    )
    assert bad.status_code == 400
    removed = client.post(
        "/console/devices/WEB-POL-1/groups", data={"remove": "line-7", "csrf_token": csrf}
    )
    assert removed.status_code == 303
    assert api.registry.device_groups("WEB-POL-1") == ()
    assert api.registry.device_attributes("WEB-POL-1") == {"model": "X2"}
