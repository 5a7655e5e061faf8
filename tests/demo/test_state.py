"""The demo's typed state: a step run before the one that makes what it needs is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tether.demo.errors import DemoStepOrderError
from tether.demo.state import DemoOptions, DemoState
from tether.demo.steps.common import Outcome
from tether.demo.steps.pki import issuing_cas, root_ceremony
from tether.demo.steps.revocation import revocation
from tether.demo.steps.traffic import devices_connect
from tether.demo.story import STEP_TITLES, STEPS


def test_the_sequence_has_one_step_per_title() -> None:
    assert len(STEPS) == len(STEP_TITLES) == 10


@pytest.mark.parametrize(
    ("step", "missing"),
    [
        (issuing_cas, "the root CA"),
        (devices_connect, "the running cloud"),
        (revocation, "the identity of CON-000001"),
    ],
)
def test_a_step_out_of_order_is_a_clear_error_and_writes_nothing(
    tmp_path: Path, step: Callable[[DemoState], Outcome], missing: str
) -> None:
    state = DemoState(DemoOptions(workspace=tmp_path, softhsm=None))
    with pytest.raises(DemoStepOrderError) as info:
        step(state)
    assert info.value.code == "demo_step_out_of_order"
    assert missing in info.value.message
    assert list(tmp_path.iterdir()) == []
    state.close()


def test_a_step_reads_what_the_one_before_made(tmp_path: Path) -> None:
    state = DemoState(DemoOptions(workspace=tmp_path, softhsm=None))
    try:
        assert root_ceremony(state).passed
        outcome = issuing_cas(state)
        assert outcome.passed
        assert state.root.certificate.subject.rfc4514_string() == "CN=Demo Root CA"
        assert sorted(role.value for role in state.issuing) == [
            "device",
            "factory",
            "server",
            "service",
        ]
        with pytest.raises(DemoStepOrderError, match="'cloud'"):
            state.registry  # noqa: B018 - the property is what is tested
    finally:
        state.close()
