"""``tether policy`` on the cloud host (DATA, ``--data-dir``, ``$TETHER_DATA_DIR``) and
through the admin API (``--url``), against a running cloud.

Mostly in-process (Typer's runner) rather than subprocesses: each ``tether`` start costs
seconds on a loaded machine and the commands are thin. The way a refusal leaves ``main``
(one line with the code, exit 3) is checked with real subprocesses, once for the API's codes
and once for a wrong token. The API tests share one cloud and one API for the module.
"""

# The cloud fixtures are composed here, not copied; pytest finds them as module attributes,
# so the test parameters "redefine" the imports.
# ruff: noqa: F811

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.cloud.api.conftest import ADMIN, Api, serve_api, snapshot
from tests.cloud.conftest import Cloud, CloudPKI, cloud, cloud_pki, running_cloud  # noqa: F401
from tests.cloud.gateway.harness import wait_for_log
from tests.support.cli import EXIT_TETHER_ERROR
from tests.support.cli import tether as run_tether
from tether.cli.app import app
from tether.cli.cloud.target import RemoteError
from tether.cloud.policy.document import parse_document
from tether.cloud.registry import Provisioning, Registry
from tether.errors import InvalidInputError, UsageError


class _Done:
    def __init__(self, exit_code: int, stdout: str, exception: BaseException | None) -> None:
        self.returncode = exit_code
        self.stdout = stdout
        self.exception = exception

    def json(self) -> Any:
        return json.loads(self.stdout)


def tether(*args: str | Path, env: dict[str, str] | None = None) -> _Done:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "300", **(env or {})})
    return _Done(result.exit_code, result.stdout, result.exception)


QUARANTINE = {
    "statements": [
        {"sid": "connect", "effect": "allow", "actions": ["connect"]},
        {"sid": "telemetry-only", "effect": "allow", "actions": ["publish"],
         "resources": ["devices/${serial}/telemetry"]},
    ]
}  # fmt: skip
BAD = {"statements": [{"sid": "oops", "effect": "maybe", "actions": ["publish"]}]}


def test_put_attach_test_and_effective_through_the_cli(
    cloud: Cloud, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = cloud.settings.data_dir
    device = cloud.console_device("CLI-POL-1")
    live = cloud.paho(device, "CLI-POL-1")
    try:
        assert live.subscribe("devices/CLI-POL-1/commands/#")[0].value == 1
        allowed = tether("policy", "test", "--data-dir", data, "--device", "CLI-POL-1",
                         "--publish", "devices/CLI-POL-1/state")  # fmt: skip
        assert allowed.returncode == 0, allowed.exception
        assert "ALLOWED" in allowed.stdout and "builtin:device" in allowed.stdout

        document = tmp_path / "quarantine.json"
        document.write_text(json.dumps(QUARANTINE))
        put = tether("policy", "put", "quarantine", document, "--data-dir", data)
        assert put.returncode == 0 and "quarantine v1" in put.stdout, put.exception
        # DATA as the first argument, as in `tether cloud`.
        attach = tether("policy", "attach", data, "quarantine", "--device", "CLI-POL-1")
        assert attach.returncode == 0, attach.exception
        # The running gateway applies it to the live session.
        assert "CLI-POL-1" in wait_for_log(caplog, "subscription_removed_by_policy").getMessage()

        refused = tether("policy", "test", "--data-dir", data, "--device", "CLI-POL-1",
                         "--publish", "devices/CLI-POL-1/state")  # fmt: skip
        assert refused.returncode == 1
        assert "REFUSED" in refused.stdout and "no statement allows it" in refused.stdout
        ok = tether("policy", "test", data, "--device", "CLI-POL-1",
                    "--publish", "devices/CLI-POL-1/telemetry", "--json")  # fmt: skip
        assert ok.returncode == 0 and ok.json()["statement"] == "telemetry-only"

        env = {"TETHER_DATA_DIR": str(data)}
        group = tether("policy", "group", "CLI-POL-1", "--add", "line-7", env=env)
        assert group.returncode == 0 and "line-7" in group.stdout
        attr = tether("policy", "attr", "CLI-POL-1", "model", "X2", env=env)
        assert attr.returncode == 0 and "model=X2" in attr.stdout
        listed = tether("policy", "attr", data, "CLI-POL-1", "--json")
        assert listed.json() == {"model": "X2"}
        effective = tether("policy", "effective", "--device", "CLI-POL-1", "--data-dir", data)
        assert effective.returncode == 0
        assert "quarantine v1" in effective.stdout and "line-7" in effective.stdout
    finally:
        live.stop()


def test_an_invalid_policy_is_refused_by_statement(cloud: Cloud, tmp_path: Path) -> None:
    data = cloud.settings.data_dir
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(BAD))
    done = tether("policy", "put", "fleet", bad, "--data-dir", data)
    assert isinstance(done.exception, InvalidInputError)
    assert done.exception.code == "policy_invalid" and 'statement "oops"' in done.exception.message
    assert cloud.registry.list_policies() == []
    both = tether("policy", "test", "--data-dir", data, "--device", "x",
                  "--publish", "a", "--subscribe", "b")  # fmt: skip
    assert isinstance(both.exception, InvalidInputError) and "exactly one" in str(both.exception)
    twice = tether("policy", "list", data, "--data-dir", data)
    assert isinstance(twice.exception, UsageError) and "not both" in str(twice.exception)
    alone = tether("policy", "attr", "SN1", "model", "--data-dir", data)
    assert isinstance(alone.exception, InvalidInputError) and "--unset" in str(alone.exception)
    builtin = tether("policy", "builtin", "service")
    assert builtin.returncode == 0 and "command-devices" in builtin.stdout


# -- through the admin API ----------------------------------------------------------------


@dataclass
class Served:
    """One cloud and its API for the module; ``policy(...)`` runs a command through ``--url``."""

    api: Api
    token_file: Path
    work: Path

    @property
    def registry(self) -> Registry:
        return self.api.registry

    def where(self, token_file: Path | None = None) -> tuple[str | Path, ...]:
        return ("--url", f"https://127.0.0.1:{self.api.port}",
                "--ca-file", self.api.cloud.pki.root_path,
                "--token-file", token_file or self.token_file)  # fmt: skip

    def policy(self, *args: str | Path) -> _Done:
        return tether("policy", *args, *self.where())


@pytest.fixture(scope="module")
def served(cloud_pki: CloudPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("policy-api")
    with running_cloud(work, cloud_pki) as started, serve_api(started) as api:
        token_file = work / "admin.token"
        token_file.write_text(api.token + "\n")
        yield Served(api, token_file, work)


def _state(registry: Registry, serial: str) -> tuple[Any, ...]:
    """Everything a refused policy command must leave as it was."""
    return (
        snapshot(registry),
        registry.list_policies(),
        registry.list_attachments(),
        registry.device_groups(serial),
        registry.device_attributes(serial),
    )


def test_every_command_through_the_api(served: Served) -> None:
    serial = "API-CLI-1"
    served.registry.add_device(serial, provisioning=Provisioning.CONSOLE, actor="test")
    document = served.work / "quarantine.json"
    document.write_text(json.dumps(QUARANTINE))

    put = served.policy("put", "quarantine", document, "--json")
    assert put.returncode == 0, put.exception
    assert put.json()["version"] == 1 and put.json()["created_by"] == ADMIN
    shown = served.policy("show", "quarantine")  # the document alone: ready to edit and put
    assert json.loads(shown.stdout) == parse_document(QUARANTINE).to_json()
    assert served.policy("show", "quarantine", "--version", "1", "--json").json()["version"] == 1

    attached = served.policy("attach", "quarantine", "--device", serial, "--json")
    assert attached.returncode == 0, attached.exception
    assert (attached.json()["kind"], attached.json()["target"]) == ("device", serial)
    by_group = served.policy("attach", "quarantine", "--group", "line-7")
    assert by_group.returncode == 0 and "attached to group line-7" in by_group.stdout
    listed = served.policy("list", "--json").json()
    assert [p["name"] for p in listed["policies"]] == ["quarantine"]
    assert {(a["kind"], a["target"]) for a in listed["attachments"]} == {
        ("device", serial),
        ("group", "line-7"),
    }
    table = served.policy("list")
    assert "device:API-CLI-1" in table.stdout and "group:line-7" in table.stdout

    assert served.policy("group", serial, "--add", "line-7", "--json").json() == ["line-7"]
    assert "API-CLI-1: line-7" in served.policy("group", serial).stdout
    assert served.policy("attr", serial, "model", "X2", "--json").json() == {"model": "X2"}
    assert "model=X2" in served.policy("attr", serial).stdout

    refused = served.policy("test", "--device", serial, "--publish", f"devices/{serial}/state",
                            "--json")  # fmt: skip
    assert refused.returncode == 1 and refused.json()["allowed"] is False
    allowed = served.policy("test", "--device", serial, "--publish", f"devices/{serial}/telemetry")
    assert allowed.returncode == 0 and "statement 'telemetry-only'" in allowed.stdout
    effective = served.policy("effective", "--device", serial, "--json").json()
    assert effective["policies"] == ["quarantine"] and effective["groups"] == ["line-7"]
    assert effective["attributes"] == {"model": "X2"}
    assert f"devices/{serial}/telemetry" in {r["pattern"] for r in effective["rules"]}
    service = served.policy("effective", "--service", "reporting", "--json").json()
    assert service["kind"] == "service" and service["policies"] == ["builtin:service"]

    assert served.policy("attr", serial, "model", "--unset", "--json").json() == {}
    assert served.policy("group", serial, "--remove", "line-7", "--json").json() == []
    for target in (("--device", serial), ("--group", "line-7")):
        detached = served.policy("detach", "quarantine", *target)
        assert detached.returncode == 0 and "detached from" in detached.stdout
    deleted = served.policy("delete", "quarantine")
    assert deleted.returncode == 0 and served.registry.list_policies() == []
    # Every change went through the API, as its admin.
    actors = {row.actor for row in served.registry.list_audit(target="quarantine").items}
    assert actors == {ADMIN}


def test_refusals_through_the_api_exit_3_with_the_apis_code_and_change_nothing(
    served: Served,
) -> None:
    serial = "API-CLI-2"
    served.registry.add_device(serial, provisioning=Provisioning.CONSOLE, actor="test")
    bad = served.work / "bad.json"
    bad.write_text(json.dumps(BAD))
    before = _state(served.registry, serial)

    unknown = served.policy("attach", "nope", "--device", serial)
    assert isinstance(unknown.exception, RemoteError) and unknown.exception.code == (
        "policy_not_found"
    )
    invalid = served.policy("put", "fleet", bad)
    assert isinstance(invalid.exception, RemoteError)
    assert invalid.exception.code == "policy_invalid"
    assert 'statement "oops"' in invalid.exception.message
    not_json = served.work / "not.json"
    not_json.write_text("{statements")
    local = served.policy("put", "fleet", not_json)
    assert isinstance(local.exception, InvalidInputError)
    assert local.exception.code == "policy_invalid"
    no_device = served.policy("group", "NOPE-2")
    assert isinstance(no_device.exception, RemoteError)
    assert no_device.exception.code == "device_not_found"
    assert isinstance(served.policy("show", "nope").exception, RemoteError)
    # As an operator sees it: one line with the API's code and message, exit 3.
    put = run_tether("policy", "put", "fleet", bad, *served.where())
    assert put.returncode == EXIT_TETHER_ERROR and "(policy_invalid)" in put.stderr
    assert 'statement "oops"' in put.stderr
    assert _state(served.registry, serial) == before

    wrong = served.work / "wrong.token"
    wrong.write_text("tether_0123456789abcdef_" + "A" * 43 + "\n")
    denied = run_tether("policy", "attach", "fleet", "--device", serial, *served.where(wrong))
    assert denied.returncode == EXIT_TETHER_ERROR and "error (" in denied.stderr
    # Nothing changed but the guard's own record of the failed sign-in.
    after = _state(served.registry, serial)
    assert after[1:] == before[1:] and after[0].devices == before[0].devices
    new = served.registry.audit_after(before[0].last_audit)
    assert {row.action for row in new} == {"api.auth_failed"}
