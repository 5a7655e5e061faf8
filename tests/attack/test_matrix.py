"""The attack matrix: every case is a real connection to a running cloud, and is refused.

Each case asserts the outcome the client saw AND the reason code that was logged; the rows
land in docs/security.md (see ``report.py``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.attack.cases import CASES, Attack, Case
from tests.attack.report import SecurityReport
from tests.cloud.conftest import Cloud


@pytest.mark.timeout(60)
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case,
            id=case.id,
            marks=[pytest.mark.xfail(strict=True, reason=case.known_gap)] if case.known_gap else [],
        )
        for case in CASES
    ],
)
def test_attack_is_refused(
    case: Case,
    cloud: Cloud,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
    security_report: SecurityReport,
) -> None:
    attack = Attack(cloud, tmp_path / "attack", caplog, request, case.codes)
    attack.directory.mkdir()
    try:
        seen = case.run(attack)
    except Exception as exc:
        security_report.record(
            "matrix",
            case.id,
            case.expectation,
            f"the attack itself failed: {exc!r}",
            passed=False,
        )
        raise
    passed = seen.kind in case.kinds and seen.code in case.codes
    security_report.record(
        "matrix",
        case.id,
        case.expectation,
        f"{seen.detail}; logged `{seen.code}`",
        passed=passed,
        known_gap=case.known_gap,
    )
    assert seen.kind in case.kinds, f"{case.id}: client saw {seen.detail}"
    assert seen.code in case.codes, f"{case.id}: logged {seen.code}"
    if seen.kind.split(":")[0] in {"tls", "connack", "closed", "device"}:
        # Refused before or at CONNECT: the attacker holds no session.
        # (A case may have closed a session of its own just before: give it a moment.)
        deadline = time.monotonic() + 5
        while cloud.running.call(_live_sessions(cloud)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cloud.running.call(_live_sessions(cloud)) == []


async def _live_sessions(cloud: Cloud) -> list[str]:
    return [identity.name for identity in cloud.service.gateway.sessions()]
