"""The CLI shell: version, help, and TetherError turned into one line and exit 3."""

from __future__ import annotations

from tests.support.cli import tether


def test_version() -> None:
    result = tether("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("tether ")


def test_no_args_shows_usage() -> None:
    result = tether()
    assert result.returncode != 0
    assert "Usage" in result.stdout + result.stderr
