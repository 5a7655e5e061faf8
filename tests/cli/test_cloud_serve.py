"""``tether cloud init`` / ``admin add`` / ``serve`` with the API, as an operator runs them."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.cli import cli_env, tether_command
from tests.support.cli import tether as run_tether
from tests.support.pki import CEREMONY_PASSPHRASE
from tether.cloud.registry import CARole, DeviceStatus, Provisioning, Registry
from tether.cloud.settings import CloudSettings
from tether.device import CloudEndpoint, DeviceClient, DeviceIdentity, FileKey
from tether.pki import sha256_fingerprint
from tether.pki.store import CaDirectory

# Any free metrics ports: a fixed default (9883) would clash with another serve running at once.
# Free metrics and CRL/OCSP ports (publish.port is 8080 by default), and one gateway worker:
# these tests are about the API beside the gateway (tests/cloud/test_cluster.py: several).
NO_FIXED_METRICS_PORTS = (
    "--metrics-port", "0", "--api-metrics-port", "0", "--publish-port", "0", "--workers", "1"
)  # fmt: skip
TOKEN_RE = re.compile(r"^tether_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$", re.MULTILINE)
PASSPHRASE = CEREMONY_PASSPHRASE  # of the session's ca_dirs
SECRETS = {"TETHER_CA_PASSPHRASE": PASSPHRASE}
tether = functools.partial(run_tether, env=SECRETS)


def _init(data: Path, ca_dirs: dict[str, Path]) -> str:
    done = tether(
        "cloud", "init", data, "--server-ca", ca_dirs["server"], "--device-ca", ca_dirs["device"]
    )
    assert done.returncode == 0, done.stderr
    tokens = TOKEN_RE.findall(done.stdout)
    assert len(tokens) == 1, done.stdout
    return tokens[0]


def test_init_makes_an_admin_and_registers_the_online_ca(
    ca_dirs: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    token = _init(data, ca_dirs)
    settings = CloudSettings.load(data)
    assert settings.api.port == 8443
    assert settings.api.device_ca == str(ca_dirs["device"].resolve())
    with Registry.open(settings.database_url) as registry:
        assert [a.name for a in registry.list_admins()] == ["admin"]
        online = registry.get_ca(
            sha256_fingerprint(CaDirectory.open(ca_dirs["device"]).certificate)
        )
        assert online.role is CARole.DEVICE
    raw = b"".join(p.read_bytes() for p in data.iterdir() if p.is_file())
    assert token.encode() not in raw and token.split("_", 2)[2].encode() not in raw

    added = tether("cloud", "admin", "add", data, "bob")
    assert added.returncode == 0, added.stderr
    assert len(TOKEN_RE.findall(added.stdout)) == 1
    again = tether("cloud", "admin", "add", data, "bob")
    assert again.returncode == 3 and "admin_exists" in again.stderr
    listed = tether("cloud", "admin", "list", data)
    assert "admin" in listed.stdout and "bob" in listed.stdout


def test_init_refuses_a_server_ca_as_the_online_device_ca(
    ca_dirs: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    done = tether(
        "cloud", "init", data, "--server-ca", ca_dirs["server"], "--device-ca", ca_dirs["server"]
    )
    assert done.returncode == 3 and "wrong_ca_role" in done.stderr
    assert not data.exists()


def _read_until(stream: object, pattern: str, deadline: float) -> re.Match[str]:
    seen = []
    while time.monotonic() < deadline:
        line = stream.readline()  # type: ignore[attr-defined]
        if not line:
            break
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no line matching {pattern!r}; saw {seen}")


def _serve(data: Path) -> subprocess.Popen[str]:
    """``tether cloud serve DATA`` on free ports, its output piped for ``_read_until``.

    One gateway worker: these tests are about the API process beside the gateway, and one
    process starts in a fraction of the time of a worker per core (tests/cloud/test_cluster.py
    covers several workers).
    """
    return subprocess.Popen(
        tether_command("cloud", "serve", data, "--port", "0", "--api-port", "0",
                       *NO_FIXED_METRICS_PORTS),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=cli_env(SECRETS, PYTHONUNBUFFERED="1"),
    )  # fmt: skip


def serve_gateway_workers(data: Path, count: int = 2) -> subprocess.Popen[str]:
    """``tether cloud serve DATA --role gateway --workers COUNT`` (no API) on free ports."""
    return subprocess.Popen(
        tether_command("cloud", "serve", data, "--port", "0", "--role", "gateway",
                       "--workers", str(count), "--metrics-port", "0", "--publish-port", "0"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=cli_env(SECRETS, PYTHONUNBUFFERED="1"),
    )  # fmt: skip


def _kill(server: subprocess.Popen[str]) -> None:
    """End a ``serve`` that a failed assertion left running."""
    if server.poll() is None:
        server.kill()
        server.wait(10)


def test_serve_runs_gateway_and_api(ca_dirs: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "data"
    token = _init(data, ca_dirs)
    server = _serve(data)
    try:
        deadline = time.monotonic() + 30
        gateway_port = int(
            _read_until(server.stdout, r"listening on 127\.0\.0\.1:(\d+)", deadline)[1]
        )
        api_port = int(_read_until(server.stdout, r"https://127\.0\.0\.1:(\d+)", deadline)[1])
        context = ssl.create_default_context(cafile=str(data / "pinned-ca.pem"))
        with httpx.Client(
            base_url=f"https://127.0.0.1:{api_port}",
            verify=context,
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ) as http:
            assert http.get("/api/v1/whoami").json() == {"name": "admin"}
            bundle = http.post("/api/v1/devices", json={"serial": "SERVE-1"})
            assert bundle.status_code == 201, bundle.text
            files = tmp_path / "device"
            files.mkdir()
            (files / "root.pem").write_text(bundle.json()["root_ca_pem"])
            (files / "cert.pem").write_text(bundle.json()["certificate_pem"])
            (files / "key.pem").write_text(bundle.json()["private_key_pem"])
            endpoint = CloudEndpoint(
                host="127.0.0.1", port=gateway_port, pinned_ca=files / "root.pem"
            )
            identity = DeviceIdentity.load(files / "cert.pem", FileKey(files / "key.pem"))
            with DeviceClient(identity, endpoint) as device:
                assert device.connect().reason_name == "SUCCESS"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    finally:
        _kill(server)


def test_init_refuses_a_database_password_on_the_command_line(
    ca_dirs: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    for url in (
        "postgresql+psycopg://tether:s3cret-pw@127.0.0.1/tether",
        "postgresql://tether@127.0.0.1/tether?password=s3cret-pw",
    ):
        done = tether(
            "cloud", "init", data, "--server-ca", ca_dirs["server"], "--database-url", url
        )
        assert done.returncode == 3, done.stdout
        assert "secret_on_command_line" in done.stderr and "--database-url-file" in done.stderr
        assert "s3cret-pw" not in done.stderr + done.stdout
        assert not data.exists()


def test_init_takes_the_database_url_from_a_file_or_the_environment(
    ca_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from_file = tmp_path / "from-file"
    url_file = tmp_path / "db-url"
    url_file.write_text(f"sqlite:///{tmp_path / 'file.db'}\n")
    url_file.chmod(0o600)
    done = tether(
        "cloud",
        "init",
        from_file,
        "--server-ca",
        ca_dirs["server"],
        "--database-url-file",
        url_file,
    )
    assert done.returncode == 0, done.stderr
    assert CloudSettings.load(from_file).database_url == f"sqlite:///{tmp_path / 'file.db'}"
    assert (tmp_path / "file.db").exists()

    from_env = tmp_path / "from-env"
    env = {**SECRETS, "TETHER_DATABASE_URL": f"sqlite:///{tmp_path / 'env.db'}"}
    done = tether("cloud", "init", from_env, "--server-ca", ca_dirs["server"], env=env)
    assert done.returncode == 0, done.stderr
    assert CloudSettings.load(from_env).database_url == f"sqlite:///{tmp_path / 'env.db'}"

    both = tether(
        "cloud", "init", tmp_path / "both", "--server-ca", ca_dirs["server"],
        "--database-url", "sqlite:///x.db", "--database-url-file", url_file,
    )  # fmt: skip
    assert both.returncode == 2 and "not both" in both.stderr  # a usage error


def test_cloud_json_is_0600_and_refused_when_others_may_read_it(
    ca_dirs: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    _init(data, ca_dirs)
    settings_file = data / "cloud.json"
    assert stat.S_IMODE(settings_file.stat().st_mode) == 0o600
    assert "api_limits" in json.loads(settings_file.read_text())
    settings_file.chmod(0o644)
    refused = tether("cloud", "admin", "list", data)
    assert refused.returncode == 3
    assert "settings_file_exposed" in refused.stderr and "chmod 600" in refused.stderr
    settings_file.chmod(0o600)
    assert tether("cloud", "admin", "list", data).returncode == 0


def test_a_zero_api_limit_in_cloud_json_is_refused(
    ca_dirs: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    _init(data, ca_dirs)
    raw = json.loads((data / "cloud.json").read_text())
    raw["api_limits"]["token_check_max_pending"] = 0
    (data / "cloud.json").write_text(json.dumps(raw))
    refused = tether(
        "cloud", "serve", data, "--port", "0", "--api-port", "0", *NO_FIXED_METRICS_PORTS
    )
    assert refused.returncode == 3
    assert "api_limits.token_check_max_pending must be a positive number" in refused.stderr


def _children(pid: int) -> set[int]:
    tasks = Path(f"/proc/{pid}/task")
    found: set[int] = set()
    for task in tasks.iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def test_serve_runs_the_api_in_its_own_process_which_never_outlives_serve(
    ca_dirs: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    token = _init(data, ca_dirs)
    server = _serve(data)
    try:
        deadline = time.monotonic() + 30
        _read_until(server.stdout, r"listening on 127\.0\.0\.1:(\d+)", deadline)
        ready = _read_until(server.stdout, r"https://127\.0\.0\.1:(\d+) .*pid (\d+)", deadline)
        api_port, api_pid = int(ready[1]), int(ready[2])
        assert api_pid != server.pid and api_pid in _children(server.pid)
        context = ssl.create_default_context(cafile=str(data / "pinned-ca.pem"))
        with httpx.Client(verify=context, timeout=10) as http:
            whoami = http.get(
                f"https://127.0.0.1:{api_port}/api/v1/whoami",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert whoami.json() == {"name": "admin"}
        server.kill()  # SIGKILL: no clean shutdown, the API must notice and go by itself
        server.wait(10)
        for _ in range(100):
            if not Path(f"/proc/{api_pid}").exists() or "Z" in _state(api_pid):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the API process outlived serve")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_serve_reports_why_the_api_process_could_not_start(
    ca_dirs: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    _init(data, ca_dirs)
    done = tether(
        "cloud", "serve", data, "--port", "0", "--api-port", "0", *NO_FIXED_METRICS_PORTS,
        env={"TETHER_CA_PASSPHRASE": "not the passphrase"}, timeout=90,
    )  # fmt: skip
    assert done.returncode == 3, done.stdout
    assert "passphrase" in done.stderr.lower(), done.stderr


def test_serve_logs_when_its_api_process_dies(ca_dirs: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "data"
    _init(data, ca_dirs)
    server = _serve(data)
    try:
        deadline = time.monotonic() + 30
        _read_until(server.stdout, r"listening on 127\.0\.0\.1:(\d+)", deadline)
        api_pid = int(_read_until(server.stdout, r"pid (\d+)", deadline)[1])
        os.kill(api_pid, signal.SIGKILL)
        match = _read_until(server.stderr, r"admin API process .* exited", deadline + 10)
        assert str(api_pid) in match.string
        assert server.poll() is None  # the gateway keeps running
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    finally:
        _kill(server)


def test_devices_table_shows_the_honest_state_and_unknown_connection(
    ca_dirs: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    _init(data, ca_dirs)
    raw = json.loads((data / "cloud.json").read_text())
    with socket.socket() as probe:  # nothing listens there: connected now is unknown
        probe.bind(("127.0.0.1", 0))
        raw["metrics"]["port"] = probe.getsockname()[1]
    (data / "cloud.json").write_text(json.dumps(raw))
    with Registry.open(CloudSettings.load(data).database_url) as registry:
        registry.add_device("CLI-NOCERT", provisioning=Provisioning.CONSOLE, actor="test:setup")
        registry.add_device("CLI-OFF", provisioning=Provisioning.CONSOLE, actor="test:setup")
        registry.set_device_status("CLI-OFF", DeviceStatus.DISABLED, actor="test:setup")
    listed = tether("cloud", "devices", data)
    assert listed.returncode == 0, listed.stderr
    rows = {
        line.split("│")[1].strip(): line for line in listed.stdout.splitlines() if "CLI-" in line
    }
    assert "no valid certificate" in rows["CLI-NOCERT"] and "unknown" in rows["CLI-NOCERT"]
    assert "disabled" in rows["CLI-OFF"] and "enabled" not in rows["CLI-OFF"]


def _gone(pid: int, seconds: float) -> bool:
    """Whether ``pid`` exits (or is a zombie) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _state(pid) in ("gone", "Z"):
            return True
        time.sleep(0.1)
    return False


def test_the_local_nats_server_stops_when_serve_and_every_worker_are_killed(
    ca_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """``kill -9`` of the whole service (supervisor and workers at once) leaves no nats-server."""
    data = tmp_path / "data"
    _init(data, ca_dirs)
    server = serve_gateway_workers(data)
    try:
        ready = _read_until(
            server.stdout,
            r"2 workers, pids (\d+), (\d+); bus .*local nats-server pid (\d+)",
            time.monotonic() + 60,
        )
        workers, nats = [int(ready[1]), int(ready[2])], int(ready[3])
        assert Path(f"/proc/{nats}/comm").read_text().strip() == "nats-server"
        for pid in (server.pid, *workers):
            os.kill(pid, signal.SIGKILL)
        server.wait(10)
        assert _gone(nats, 15), "the local nats-server outlived the killed service"
        assert all(_gone(pid, 15) for pid in workers)
    finally:
        _kill(server)
