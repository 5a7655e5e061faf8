"""``tether cloud claim|enrollment-token|renew-now``, on the cloud host and through the API."""

# The cloud fixtures are composed here, not copied; pytest finds them as module attributes,
# so the test parameters "redefine" the imports.
# ruff: noqa: F811

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

from cryptography import x509

from tests.cloud.api.conftest import Snapshot, serve_api, snapshot
from tests.cloud.conftest import Cloud, CloudPKI, cloud, cloud_pki  # noqa: F401 - fixtures
from tests.support.cli import EXIT_TETHER_ERROR
from tests.support.cli import tether as run_tether
from tests.support.pki import CEREMONY_PASSPHRASE
from tether.cloud.api.schemas import KEY_ESCROW_WARNING
from tether.cloud.enrollment.service import token_hash
from tether.cloud.registry import Provisioning, Registry
from tether.cloud.registry.enrollment_records import ClaimRecord
from tether.cloud.settings import CloudSettings

tether = functools.partial(run_tether, env={"TETHER_CA_PASSPHRASE": CEREMONY_PASSPHRASE})


def _state(registry: Registry) -> tuple[Snapshot, list[ClaimRecord]]:
    return (snapshot(registry), registry.list_claims())


def test_on_the_cloud_host(ca_dirs: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "cloud"
    token_file = tmp_path / "admin.token"
    init = tether("cloud", "init", data, "--server-ca", ca_dirs["server"],
                  "--device-ca", ca_dirs["device"], "--token-file", token_file)  # fmt: skip
    assert init.returncode == 0, init.stderr

    made = tether("cloud", "claim", "create", data, "line-4", "--serial", "L4-1",
                  "--serial", "L4-2", "--valid-for", "24")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "claim 'line-4'" in made.stdout and KEY_ESCROW_WARNING[:40] in made.stdout
    assert "-----BEGIN CERTIFICATE-----" in made.stdout
    assert "-----BEGIN PRIVATE KEY-----" in made.stdout
    as_json = tether("cloud", "claim", "list", data, "--json")
    assert as_json.returncode == 0, as_json.stderr
    [claim] = json.loads(as_json.stdout)
    assert claim["name"] == "line-4" and claim["serials"] == ["L4-1", "L4-2"]

    token = tether("cloud", "enrollment-token", "create", data, "NEW-1", "--json")
    assert token.returncode == 0, token.stderr
    with Registry.open(CloudSettings.load(data).database_url) as registry:
        issued = json.loads(token.stdout)
        assert registry.enrollment_token_serial(token_hash(issued["token"])) == "NEW-1"
        registry.add_device("OLD-1", provisioning=Provisioning.CONSOLE, actor="test")
        renew = tether("cloud", "renew-now", data, "OLD-1")
        assert renew.returncode == 0 and "renewal requested of OLD-1" in renew.stdout
        [row] = registry.list_audit(target="OLD-1", limit=1).items
        assert row.action == "device.renew_requested" and row.actor.startswith("cli:")

        before = _state(registry)
        unknown = tether("cloud", "renew-now", data, "NOPE-1")
        assert unknown.returncode == EXIT_TETHER_ERROR and "(device_not_found)" in unknown.stderr
        for hours in ("0", "100000"):
            bad = tether("cloud", "claim", "create", data, "line-5", "--valid-for", hours)
            assert bad.returncode == EXIT_TETHER_ERROR and "(valid_for_invalid)" in bad.stderr
        long = tether("cloud", "enrollment-token", "create", data, "NEW-2", "--valid-for", "9000")
        assert long.returncode == EXIT_TETHER_ERROR and "(valid_for_invalid)" in long.stderr
        no_secret = run_tether("cloud", "claim", "create", data, "line-6")
        assert no_secret.returncode == EXIT_TETHER_ERROR and "passphrase" in no_secret.stderr
        assert _state(registry) == before


def test_through_the_api(cloud: Cloud, tmp_path: Path) -> None:
    with serve_api(cloud) as api:
        token_file = tmp_path / "admin.token"
        token_file.write_text(api.token + "\n")
        where = ("--url", f"https://127.0.0.1:{api.port}", "--ca-file", cloud.pki.root_path)

        def call(*args: str, token: Path = token_file) -> subprocess.CompletedProcess[str]:
            return tether("cloud", *args, *where, "--token-file", token)

        made = call("claim", "create", "line-7", "--max-enrollments", "3", "--json")
        assert made.returncode == 0, made.stderr
        body = json.loads(made.stdout)
        assert body["key_escrow_warning"] == KEY_ESCROW_WARNING
        x509.load_pem_x509_certificate(body["certificate_pem"].encode())
        listed = call("claim", "list")
        assert listed.returncode == 0 and "line-7  any serial  0 of 3 enrolled" in listed.stdout
        issued = call("enrollment-token", "create", "NEW-7", "--valid-for", "1")
        assert issued.returncode == 0 and "shown once" in issued.stdout
        token = issued.stdout.strip().splitlines()[-1]
        assert cloud.registry.enrollment_token_serial(token_hash(token)) == "NEW-7"
        cloud.registry.add_device("OLD-7", provisioning=Provisioning.CONSOLE, actor="test")
        renew = call("renew-now", "OLD-7", "--json")
        assert renew.returncode == 0 and json.loads(renew.stdout)["serial"] == "OLD-7"

        before = _state(cloud.registry)
        unknown = call("renew-now", "NOPE-7")
        assert unknown.returncode == EXIT_TETHER_ERROR and "(device_not_found)" in unknown.stderr
        bad = call("claim", "create", "line-8", "--valid-for", "-5")
        assert bad.returncode == EXIT_TETHER_ERROR and "(valid_for_invalid)" in bad.stderr
        wrong = tmp_path / "wrong.token"
        wrong.write_text("tether_0123456789abcdef_" + "A" * 43 + "\n")
        assert _state(cloud.registry) == before
        denied = call("claim", "create", "line-9", token=wrong)
        assert denied.returncode == EXIT_TETHER_ERROR and "error (" in denied.stderr
        # Nothing changed but the guard's own record of the failed sign-in.
        after = _state(cloud.registry)
        assert after[0].devices == before[0].devices and after[1] == before[1]
        new = cloud.registry.audit_after(before[0].last_audit)
        assert {row.action for row in new} == {"api.auth_failed"}
