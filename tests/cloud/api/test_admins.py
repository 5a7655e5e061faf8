"""Admin tokens are rotated and revoked through the API and the CLI, effective at once."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from tests.cloud.api.conftest import ADMIN, Api, pinned_context
from tests.support.cli import tether
from tether.cloud.admin import create_admin

TOKEN_RE = re.compile(r"^tether_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$", re.MULTILINE)


def _whoami(api: Api, token: str) -> int:
    return api.anonymous.get(
        "/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}
    ).status_code


def test_rotation_through_the_api_refuses_the_old_token_on_every_instance(
    api: Api, api_with: Callable[..., Api]
) -> None:
    second = api_with(admin=None)  # another API over the same registry
    bob = create_admin(api.registry, "bob", actor="test:setup").token
    assert _whoami(api, bob) == 200 and _whoami(second, bob) == 200  # cached on both now

    rotated = api.http.post("/api/v1/admins/bob/rotate")
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["name"] == "bob" and TOKEN_RE.fullmatch(body["token"])
    assert "shown once" in body["warning"]
    assert rotated.headers["Cache-Control"] == "no-store"

    assert _whoami(api, bob) == 401 and _whoami(second, bob) == 401
    assert _whoami(api, body["token"]) == 200 and _whoami(second, body["token"]) == 200
    entry = api.registry.list_audit(target="bob").items[0]
    assert (entry.action, entry.actor) == ("admin.rotate", ADMIN)


def test_revocation_through_the_api_is_immediate_audited_and_spares_the_last_admin(
    api: Api, api_with: Callable[..., Api]
) -> None:
    second = api_with(admin=None)
    bob = create_admin(api.registry, "bob", actor="test:setup").token
    assert _whoami(api, bob) == 200 and _whoami(second, bob) == 200

    revoked = api.http.post("/api/v1/admins/bob/revoke")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked" and revoked.json()["revoked_at"]
    assert _whoami(api, bob) == 401 and _whoami(second, bob) == 401
    entry = api.registry.list_audit(target="bob").items[0]
    assert (entry.action, entry.actor) == ("admin.revoke", ADMIN)

    again = api.http.post("/api/v1/admins/bob/revoke")
    assert again.status_code == 409 and again.json()["code"] == "admin_state"
    assert api.http.post("/api/v1/admins/nobody/rotate").json()["code"] == "admin_not_found"
    # alice is the last active admin now: refused, and she keeps working.
    last = api.http.post(f"/api/v1/admins/{ADMIN}/revoke")
    assert last.status_code == 409 and "last active admin" in last.json()["message"]
    assert api.http.get("/api/v1/whoami").status_code == 200
    listed = {a["name"]: a["status"] for a in api.http.get("/api/v1/admins").json()}
    assert listed == {ADMIN: "active", "bob": "revoked"}


def test_rotation_and_revocation_through_the_cli_reach_a_running_api(api: Api) -> None:
    data = api.cloud.settings.data_dir
    bob = create_admin(api.registry, "bob", actor="test:setup").token
    assert _whoami(api, bob) == 200

    rotated = tether("cloud", "admin", "rotate", data, "bob")
    assert rotated.returncode == 0, rotated.stderr
    (new,) = TOKEN_RE.findall(rotated.stdout)
    assert _whoami(api, bob) == 401 and _whoami(api, new) == 200

    revoked = tether("cloud", "admin", "revoke", data, "bob")
    assert revoked.returncode == 0, revoked.stderr
    assert _whoami(api, new) == 401
    actions = [e.action for e in api.registry.list_audit(target="bob").items]
    assert actions[:2] == ["admin.revoke", "admin.rotate"]
    assert api.registry.list_audit(target="bob").items[0].actor.startswith("cli:")

    listed = tether("cloud", "admin", "list", data)
    assert re.search(r"^bob\s+revoked\s+created .* revoked ", listed.stdout, re.MULTILINE)
    refused = tether("cloud", "admin", "revoke", data, ADMIN)
    assert refused.returncode == 3 and "admin_state" in refused.stderr
    assert _whoami(api, api.token) == 200


def test_a_revoked_admins_console_session_ends_at_the_next_page(api: Api) -> None:
    bob = create_admin(api.registry, "bob", actor="test:setup").token
    with httpx.Client(
        base_url=f"https://127.0.0.1:{api.port}", verify=pinned_context(api.cloud)
    ) as browser:
        form = browser.get("/console/login")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert csrf, form.text
        signed_in = browser.post("/console/login", data={"csrf_token": csrf[1], "token": bob})
        assert signed_in.status_code == 303, signed_in.text
        assert browser.get("/console/devices").status_code == 200
        assert api.http.post("/api/v1/admins/bob/revoke").status_code == 200
        after = browser.get("/console/devices")
        assert after.status_code == 303 and after.headers["location"] == "/console/login"
