"""The CLI shell: version, help, and TetherError turned into one line and exit 3."""

from __future__ import annotations

import subprocess
import sys

from tests.support.cli import tether


def test_version() -> None:
    result = tether("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("tether ")


def test_no_args_shows_usage() -> None:
    result = tether()
    assert result.returncode != 0
    assert "Usage" in result.stdout + result.stderr


HEAVY = ("fastapi", "sqlalchemy", "awscrt", "uvicorn")
_IMPORTED = """
import sys
from tether.cli.app import app
try:
    app({args!r}, standalone_mode=False)
except SystemExit:
    pass
print("imported:", *sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


def _heavy_imports(*args: str) -> list[str]:
    """Which of HEAVY a run of ``tether ARGS`` imported (in a fresh interpreter)."""
    code = _IMPORTED.format(args=list(args), heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("imported:"), done.stderr
    return line.split()[1:]


def test_version_imports_no_heavy_dependency() -> None:
    assert _heavy_imports("--version") == []


def test_ca_and_help_import_no_heavy_dependency() -> None:
    assert _heavy_imports("--help") == []
    assert _heavy_imports("ca", "--help") == []
    assert _heavy_imports("ca", "issue-intermediate", "--help") == []


def test_a_cloud_command_loads_its_group() -> None:
    result = tether("cloud", "--help")
    assert result.returncode == 0
    assert "serve" in result.stdout


def test_usage_errors_exit_2() -> None:
    result = tether("ca", "no-such-command")
    assert result.returncode == 2


def test_device_connect_has_no_server_name_option() -> None:
    """awscrt checks the dialled host and nothing else: an option that could only fail is gone."""
    result = tether("device", "connect", "--help")
    assert result.returncode == 0
    assert "--server-name" not in result.stdout
