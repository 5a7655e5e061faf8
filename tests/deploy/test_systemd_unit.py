"""The systemd unit in deploy/: systemd's own tools accept it, and it is hardened.

``systemd-analyze verify`` loads the unit as systemd would (unknown keys and bad values are
printed as warnings, so the test wants no output at all, not just exit 0); it also checks that
``ExecStart`` is executable, so the test points it at this checkout's ``tether``.
``systemd-analyze security --offline=true`` scores the sandboxing without a running systemd
(this container has none); the unit must stay at or below 2.0 ("OK"). Both come from Debian's
``systemd`` package (scripts/system-packages.txt).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "tether-cloud.service"
INSTALLED = "/opt/tether/bin/tether"


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's ``tether`` (same file name)."""
    here = str(Path(sys.executable).with_name("tether"))
    text = UNIT.read_text()
    assert INSTALLED in text
    path = tmp_path / UNIT.name
    path.write_text(text.replace(INSTALLED, here))
    return path


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: run ./scripts/install-system-deps (package systemd)"
    return subprocess.run([analyze, *args], capture_output=True, text=True, timeout=60)


def test_systemd_analyze_verify_has_nothing_to_say(unit: Path) -> None:
    done = _analyze("verify", str(unit))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "" and done.stderr.strip() == "", done.stdout + done.stderr


def test_a_broken_unit_is_caught_by_the_same_check(unit: Path) -> None:
    # The check above is only worth something if a typo in a hardening option shows.
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystem=strikt"))
    done = _analyze("verify", str(unit))
    assert "Failed to parse protect system value" in done.stderr


def test_the_sandbox_scores_ok(unit: Path) -> None:
    done = _analyze("security", "--offline=true", "--threshold=20", str(unit))
    assert done.returncode == 0, done.stdout[-2000:]
    assert "Overall exposure level" in done.stdout


def test_the_hardening_the_issue_asks_for_is_there() -> None:
    lines = {line.strip() for line in UNIT.read_text().splitlines()}
    for wanted in (
        "User=tether",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "StateDirectory=tether",
        "ReadWritePaths=/var/lib/tether",
        "CapabilityBoundingSet=",
    ):
        assert wanted in lines, wanted


def test_execstart_is_a_command_line_the_cli_accepts(tmp_path: Path) -> None:
    # The unit's arguments parse (a usage error would exit 2); a missing data directory is
    # the service's own clear error (exit 3), which is what a fresh machine would show.
    exec_start = next(
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith("ExecStart=") and line != "ExecStart="
    )
    args = exec_start.split()[1:]
    data = args.index("/var/lib/tether/cloud")
    args[data] = str(tmp_path / "missing")
    done = subprocess.run(
        [str(Path(sys.executable).with_name("tether")), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert done.returncode == 3, done.stderr
    assert "not a Tether cloud data directory" in done.stderr
