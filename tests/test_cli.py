"""The CLI shell: version, help, and TetherError turned into one line and exit 3."""

from __future__ import annotations

import subprocess
import sys


def run_tether(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", *args], capture_output=True, text=True, timeout=60
    )


def test_version() -> None:
    result = run_tether("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("tether ")


def test_no_args_shows_usage() -> None:
    result = run_tether()
    assert result.returncode != 0
    assert "Usage" in result.stdout + result.stderr
