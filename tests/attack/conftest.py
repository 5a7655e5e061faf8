"""Fixtures of the attack suite: the real cloud (composed from tests/cloud) and the report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.attack.cases import CASES
from tests.attack.report import SecurityReport
from tests.cloud.conftest import cloud, cloud_pki  # noqa: F401 - fixtures, composed not copied

REPORT_PATH = Path(__file__).resolve().parents[2] / "docs" / "security.md"


@pytest.fixture(scope="session")
def security_report() -> Iterator[SecurityReport]:
    """The session's report; written to docs/security.md when the matrix ran in full."""
    report = SecurityReport(REPORT_PATH, matrix_cases=len(CASES))
    yield report
    report.write()
