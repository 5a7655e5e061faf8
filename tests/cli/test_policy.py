"""``tether policy`` against a running cloud.

In-process (Typer's runner) rather than subprocesses: each ``tether`` start costs seconds on a
loaded machine and the commands are thin; ``main``'s one-line error and exit 3 are the
subject of ``tests/cloud/test_cli_cloud.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.cloud.conftest import Cloud
from tests.cloud.gateway.harness import wait_for_log
from tether.cli.app import app
from tether.errors import InvalidInputError


class _Done:
    def __init__(self, exit_code: int, stdout: str, exception: BaseException | None) -> None:
        self.returncode = exit_code
        self.stdout = stdout
        self.exception = exception


def tether(*args: str | Path) -> _Done:
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})
    return _Done(result.exit_code, result.stdout, result.exception)


QUARANTINE = {
    "statements": [
        {"sid": "connect", "effect": "allow", "actions": ["connect"]},
        {"sid": "telemetry-only", "effect": "allow", "actions": ["publish"],
         "resources": ["devices/${serial}/telemetry"]},
    ]
}  # fmt: skip


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
        assert allowed.returncode == 0, allowed.stderr
        assert "ALLOWED" in allowed.stdout and "builtin:device" in allowed.stdout

        document = tmp_path / "quarantine.json"
        document.write_text(json.dumps(QUARANTINE))
        put = tether("policy", "put", "quarantine", document, "--data-dir", data)
        assert put.returncode == 0 and "quarantine v1" in put.stdout, put.stderr
        attach = tether("policy", "attach", "quarantine", "--device", "CLI-POL-1",
                        "--data-dir", data)  # fmt: skip
        assert attach.returncode == 0, attach.stderr
        # The running gateway applies it to the live session.
        assert "CLI-POL-1" in wait_for_log(caplog, "subscription_removed_by_policy").getMessage()

        refused = tether("policy", "test", "--data-dir", data, "--device", "CLI-POL-1",
                         "--publish", "devices/CLI-POL-1/state")  # fmt: skip
        assert refused.returncode == 1
        assert "REFUSED" in refused.stdout and "no statement allows it" in refused.stdout
        ok = tether("policy", "test", "--data-dir", data, "--device", "CLI-POL-1",
                    "--publish", "devices/CLI-POL-1/telemetry")  # fmt: skip
        assert ok.returncode == 0 and "statement 'telemetry-only'" in ok.stdout

        group = tether("policy", "group", "CLI-POL-1", "--add", "line-7", "--data-dir", data)
        assert group.returncode == 0 and "line-7" in group.stdout
        attr = tether("policy", "attr", "CLI-POL-1", "model", "X2", "--data-dir", data)
        assert attr.returncode == 0 and "model=X2" in attr.stdout
        effective = tether("policy", "effective", "--device", "CLI-POL-1", "--data-dir", data)
        assert effective.returncode == 0
        assert "quarantine v1" in effective.stdout and "line-7" in effective.stdout
    finally:
        live.stop()


def test_an_invalid_policy_is_refused_by_statement(cloud: Cloud, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    statement = {"sid": "oops", "effect": "maybe", "actions": ["publish"], "resources": ["a"]}
    bad.write_text(json.dumps({"statements": [statement]}))
    done = tether("policy", "put", "fleet", bad, "--data-dir", cloud.settings.data_dir)
    assert isinstance(done.exception, InvalidInputError)
    assert done.exception.code == "policy_invalid" and 'statement "oops"' in done.exception.message
    assert cloud.registry.list_policies() == []
    both = tether("policy", "test", "--data-dir", cloud.settings.data_dir, "--device", "x",
                  "--publish", "a", "--subscribe", "b")  # fmt: skip
    assert isinstance(both.exception, InvalidInputError) and "exactly one" in str(both.exception)
    builtin = tether("policy", "builtin", "service")
    assert builtin.returncode == 0 and "command-devices" in builtin.stdout
