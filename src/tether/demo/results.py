"""What one step of the demo observed: a frozen value the CLI renders and tests assert on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StepResult:
    """One step: what should happen, what did, and a few lines of real values.

    ``passed`` is the verdict: the observed behaviour is the expected one (a refusal is a pass
    when a refusal was expected). ``lines`` are short, already-worded facts for the story.
    """

    number: int
    name: str
    title: str
    expectation: str
    observed: str
    passed: bool
    lines: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        """``"pass"`` or ``"FAIL"``."""
        return "pass" if self.passed else "FAIL"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the CLI's ``--json`` lines)."""
        return {
            "step": self.number,
            "name": self.name,
            "title": self.title,
            "expectation": self.expectation,
            "observed": self.observed,
            "verdict": self.verdict,
            "seconds": round(self.seconds, 3),
        }
