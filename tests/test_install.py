"""``pip install .`` alone, into a fresh venv, gives a working ``tether`` (issue 19).

One test, marked ``install`` (about a minute and a half: pip resolves and installs every
runtime dependency, then the demo runs). It installs a copy of the tracked files, so the
checkout gets no ``build/`` or ``*.egg-info`` from it, with no extras: what a user who runs
``pip install .`` gets, nothing from the test or dev environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tracked_copy(into: Path) -> Path:
    files = (
        subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return into


@pytest.mark.install
@pytest.mark.timeout(900)
def test_plain_pip_install_runs_version_ceremony_and_demo(tmp_path: Path) -> None:
    source = _tracked_copy(tmp_path / "src")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    pip = subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
    tether = str(env_dir / "bin" / "tether")
    env = {k: v for k, v in os.environ.items() if k not in ("SOFTHSM2_CONF", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "160"

    version = subprocess.run([tether, "--version"], capture_output=True, text=True, timeout=60,
                             env=env)  # fmt: skip
    assert version.returncode == 0 and version.stdout.startswith("tether "), version.stderr

    root = subprocess.run(
        [tether, "ca", "init-root", str(tmp_path / "root"), "--name", "Install Root"],
        capture_output=True, text=True, timeout=120,
        env={**env, "TETHER_ROOT_PASSPHRASE": "install test passphrase"},
    )  # fmt: skip
    assert root.returncode == 0, root.stdout + root.stderr
    assert (tmp_path / "root").is_dir()

    demo = subprocess.run([tether, "demo", "--json"], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    final = json.loads([line for line in demo.stdout.splitlines() if line.startswith("{")][-1])
    assert final["passed"] is True
    # The tether it ran is the fresh venv's, not this environment's.
    assert Path(sys.executable).parent != env_dir / "bin"
