"""``tether demo`` end to end (a subprocess, as a user runs it) and its failure paths.

The demo makes its own SoftHSM2 configuration and token, so the subprocess runs with no
SOFTHSM2_CONF from the test session; everything else is real: CAs, registry, gateway, awscrt
devices, a paho service, a rogue CA and an impostor server on loopback.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.softhsm import SoftHSM, Token
from tether.demo import STEP_TITLES, Demo, DemoOptions, SoftHsmToken, init_softhsm_token
from tether.demo.cloud import LogCapture
from tether.demo.errors import DemoSetupError
from tether.demo.workspace import prepare_workspace

DEMO_TIMEOUT_S = 120
STEP_NAMES = [STEP_TITLES[n][0] for n in range(1, 11)]


def run_demo(*args: str) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """Run ``python -m tether demo --json ARGS``; returns the process and the JSON lines."""
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    env["COLUMNS"] = "160"
    process = subprocess.run(
        [sys.executable, "-m", "tether", "demo", "--json", *args],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        env=env,
    )
    lines = [json.loads(line) for line in process.stdout.splitlines() if line.startswith("{")]
    return process, lines


def assert_every_step_passed(
    process: subprocess.CompletedProcess[str], lines: list[dict[str, Any]]
) -> dict[str, Any]:
    """Exit 0, ten passing steps in order, and the closing line; returns the closing line."""
    assert process.returncode == 0, process.stdout + process.stderr
    steps, final = lines[:-1], lines[-1]
    assert [s["name"] for s in steps] == STEP_NAMES
    assert [s["verdict"] for s in steps] == ["pass"] * 10, steps
    assert final["passed"] is True
    assert "all 10 steps behaved as they should" in process.stdout
    return final


def test_demo_runs_every_step_with_softhsm_and_removes_its_workspace() -> None:
    started = time.monotonic()
    process, lines = run_demo()
    elapsed = time.monotonic() - started
    final = assert_every_step_passed(process, lines)
    assert elapsed < 60, f"the demo took {elapsed:.0f} s; it must finish within a minute"
    by_name = {s["name"]: s for s in lines[:-1]}
    assert "SoftHSM2 token" in process.stdout
    assert "CKA_VALUE read refused" in by_name["factory"]["observed"]
    assert "tether-sender=TTH-000001" in by_name["message"]["observed"]
    assert "ca_not_registered" in by_name["rogue"]["observed"]
    assert "server_not_trusted" in by_name["impostor"]["observed"]
    assert "certificate_revoked" in by_name["revoke"]["observed"]
    assert "key escrow risk" in process.stdout
    assert final["kept"] is False
    assert not Path(final["workspace"]).exists()


def test_demo_with_the_emulator_says_so_and_passes() -> None:
    process, lines = run_demo("--secure-element", "emulator")
    assert_every_step_passed(process, lines)
    assert "SOFTWARE EMULATOR" in process.stdout
    factory = next(s for s in lines if s.get("name") == "factory")
    assert "software emulator" in factory["observed"]
    assert "Traceback" not in process.stderr


def _private_keys(root: Path) -> dict[Path, bytes]:
    """Every file under ``root`` that holds a PEM private key (encrypted or not)."""
    return {
        p: p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and b"PRIVATE KEY-----" in p.read_bytes()
    }


def test_keep_keeps_the_workspace_without_root_key_outside_the_ceremony(tmp_path: Path) -> None:
    kept = tmp_path / "demo"
    process, lines = run_demo("--keep", str(kept))
    final = assert_every_step_passed(process, lines)
    assert final["kept"] is True
    assert Path(final["workspace"]) == kept

    ceremony = kept / "ceremony" / "root-ca"
    for path in [ceremony] + [
        kept / "issuing" / r for r in ("factory", "device", "service", "server")
    ]:
        assert (path / "ca.json").is_file() and (path / "ca.crt.pem").is_file()
    cloud = kept / "cloud"
    for name in (
        "cloud.json",
        "server.chain.pem",
        "server.key.pem",
        "pinned-ca.pem",
        "registry.db",
    ):
        assert (cloud / name).is_file()

    root_key = (ceremony / "ca.key.pem").read_bytes()
    root_public = x509.load_pem_x509_certificate(
        (ceremony / "ca.crt.pem").read_bytes()
    ).public_key()
    keys = _private_keys(kept)
    outside = {p: data for p, data in keys.items() if not p.is_relative_to(ceremony)}
    assert keys.keys() - outside.keys() == {ceremony / "ca.key.pem"}
    for path, data in outside.items():
        assert data != root_key, path
        if b"ENCRYPTED" not in data:  # a clear key must not be the root's
            key = serialization.load_pem_private_key(data, password=None)
            assert key.public_key() != root_public, path
    assert b"BEGIN ENCRYPTED PRIVATE KEY" in root_key

    cloud_keys = _private_keys(cloud)
    assert list(cloud_keys) == [cloud / "server.key.pem"]
    server_cert = x509.load_pem_x509_certificates((cloud / "server.chain.pem").read_bytes())[0]
    server_key = serialization.load_pem_private_key(cloud_keys[cloud / "server.key.pem"], None)
    assert server_key.public_key() == server_cert.public_key()
    assert b"PRIVATE KEY" not in (cloud / "registry.db").read_bytes()


def test_keep_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    kept = tmp_path / "busy"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    process, _ = run_demo("--keep", str(kept))
    assert process.returncode == 3
    assert "demo_workspace_not_empty" in process.stderr
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]
    assert (kept / "notes.txt").read_text() == "mine"


def test_prepare_workspace_refuses_a_file_and_makes_a_temporary_directory(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(Exception, match="not empty") as info:
        prepare_workspace(target)
    assert getattr(info.value, "code", None) == "demo_workspace_not_empty"
    temporary = prepare_workspace(None)
    try:
        assert temporary.is_dir() and not any(temporary.iterdir())
    finally:
        temporary.rmdir()


def test_a_failing_softhsm2_util_is_a_setup_error(tmp_path: Path) -> None:
    with pytest.raises(DemoSetupError) as info:
        init_softhsm_token("/bin/false", "/nonexistent/libsofthsm2.so", tmp_path / "c.conf")
    assert info.value.code == "demo_setup_failed"
    assert not (tmp_path / "c.conf").exists()


def test_a_failed_step_stops_the_story_and_is_reported(
    tmp_path: Path, softhsm: SoftHSM, token: Token
) -> None:
    # A real token with the wrong PIN: the factory station cannot log in at step 4.
    wrong = SoftHsmToken(module=token.module, conf=softhsm.conf, label=token.label, pin="0000")
    demo = Demo(DemoOptions(workspace=tmp_path, softhsm=wrong, timeout=5.0))
    try:
        results = list(demo.run())
    finally:
        demo.close()
    assert [r.passed for r in results] == [True, True, True] + [False] * 7
    assert "pin" in results[3].observed.lower()
    assert all(r.observed == "not run: step 4 failed" for r in results[4:])
    # close() stopped the cloud: nothing listens any more and the log handler is gone.
    match = re.search(r"127\.0\.0\.1:(\d+)", results[2].observed)
    assert match is not None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=2).close()
    assert not any(isinstance(h, LogCapture) for h in logging.getLogger("tether").handlers)
