"""The README's "Deploying by hand", run as written: every command is one a user can copy.

The ``sh`` blocks between ``<!-- by-hand:start -->`` and ``<!-- by-hand:end -->`` are joined
into one bash script (``set -euo pipefail``: any failing command fails the test) and run in a
temporary directory with this environment's ``tether`` first on PATH. The only change made
to them: the five fixed ports (8883, 8443, 8080, 9883, 9884) become free ports, so the test
can run next to anything else on the machine. Then it checks what the walkthrough says
happened: the unit connected (JIT), the service was registered and published a command, the
unit was refused after its revocation by serial number through the remote CLI.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.device.broker import free_port

README = Path(__file__).resolve().parents[1] / "README.md"
PORTS = ("8883", "8443", "8080", "9883", "9884")


def walkthrough() -> str:
    """The README's by-hand blocks, in order, as one script."""
    text = README.read_text()
    section = text.split("<!-- by-hand:start -->", 1)[1].split("<!-- by-hand:end -->", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    assert len(blocks) >= 6, "the by-hand section lost its blocks"
    return "\n".join(blocks)


def test_the_readme_blocks_use_only_real_commands() -> None:
    """Each line starts with a command a user has (tether, openssl, mosquitto, shell built-ins)."""
    allowed = {"mkdir", "export", "tether", "until", "printf", "softhsm2-util", "echo",
               "mosquitto_pub", "kill", "touch", "OPENSSL_CONF=$PWD/pkcs11.cnf"}  # fmt: skip
    for line in walkthrough().splitlines():
        if line.strip() and not line.startswith("KEY="):
            assert line.split()[0] in allowed, line


@pytest.mark.timeout(600)
def test_the_by_hand_deployment_works_as_written(tmp_path: Path) -> None:
    script = walkthrough()
    for port in PORTS:
        script = re.sub(rf"\b{port}\b", str(free_port()), script)
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("SOFTHSM2_CONF", "TETHER_CONFIG")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", COLUMNS="200")
    process = subprocess.Popen(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = process.communicate(timeout=540)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    work = tmp_path / "tether-by-hand"
    serve_log = (work / "serve.log").read_text() if (work / "serve.log").exists() else ""
    assert process.returncode == 0, out + "\n--- serve.log ---\n" + serve_log
    flat = " ".join(out.split())
    assert "made 1 unit(s)" in flat
    assert re.search(r"registered \w+ for billing", flat), flat
    assert "revoked" in flat and "refused: SN-0001 is revoked" in flat
    assert "handshake_authorized" in serve_log or "SN-0001" in serve_log
    assert "certificate_revoked" in serve_log, serve_log
    # The audit log (read through the API) names the revocation and the admin who made it.
    assert "certificate.revoke" in flat and "admin" in flat
