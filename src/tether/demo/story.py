"""The story of DESIGN.md, run for real: ten steps, each returning what it observed.

``Demo.run()`` yields one ``StepResult`` per step as soon as the step is done, so the CLI can
tell the story while it happens. A step passes when the system behaved as it should, which
for steps 8-10 means a refusal. A step that raises is a failed step with the error as its
observation; the steps after it are reported as not run (they depend on it). ``close()``
stops every client, the cloud and the secure element; the CLI removes the workspace.

This module is the sequence and the reporting only: the steps are in ``tether.demo.steps``
(one module per step or related pair), over one ``DemoState`` (``tether.demo.state``) that
holds what earlier steps produced and the secrets, in memory only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from tether.demo.cloud import LogEvent
from tether.demo.results import StepResult
from tether.demo.state import DemoOptions, DemoState
from tether.demo.steps.cloud_up import cloud_starts
from tether.demo.steps.common import Outcome
from tether.demo.steps.devices import console_device, factory_device
from tether.demo.steps.pki import issuing_cas, root_ceremony
from tether.demo.steps.refusals import impostor_server, rogue_device
from tether.demo.steps.revocation import revocation
from tether.demo.steps.traffic import devices_connect, message_and_command
from tether.errors import TetherError

__all__ = ["STEPS", "STEP_TITLES", "Demo", "DemoOptions"]

STEP_TITLES: dict[int, tuple[str, str, str]] = {
    1: ("root", "Root ceremony", "an offline root CA with an encrypted key"),
    2: ("issuing", "Issuing CAs", "factory, device, service and server CAs signed by the root"),
    3: ("cloud", "The cloud starts", "gateway and API up; factory (JIT), device, service CAs"),
    4: ("factory", "A device made in the factory", "key generated in the secure element"),
    5: ("console", "A device created in the console", "three files returned once, with a warning"),
    6: ("connect", "Both devices connect", "mutual TLS accepted, CONNACK SUCCESS for both"),
    7: ("message", "Telemetry up, a command down", "sender attributed; command delivered"),
    8: ("rogue", "A device from a rogue CA", "refused; the gateway logs why"),
    9: ("impostor", "A man-in-the-middle server", "the device refuses: server_not_trusted"),
    10: ("revoke", "Revocation drops a live device", "session dropped; reconnect refused"),
}

# The story, in order: step N is STEPS[N - 1], titled STEP_TITLES[N].
STEPS: tuple[Callable[[DemoState], Outcome], ...] = (
    root_ceremony,
    issuing_cas,
    cloud_starts,
    factory_device,
    console_device,
    devices_connect,
    message_and_command,
    rogue_device,
    impostor_server,
    revocation,
)


class Demo:
    """Runs the ten steps in order over one ``DemoState``; ``close`` releases all of it."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.state = DemoState(options)

    def run(self) -> Iterator[StepResult]:
        """Run every step in order, yielding each result when the step ends."""
        self.state.log.install()
        failed: int | None = None
        for number, step in enumerate(STEPS, start=1):
            name, title, expectation = STEP_TITLES[number]
            if failed is not None:
                yield StepResult(
                    number, name, title, expectation, f"not run: step {failed} failed", False
                )
                continue
            started = time.perf_counter()
            try:
                outcome = step(self.state)
            except TetherError as exc:
                outcome = Outcome(f"error ({exc.code}): {exc.message}", False, ())
            except Exception as exc:  # a bug: report it as the step's failure, keep the story
                outcome = Outcome(f"unexpected {type(exc).__name__}: {exc}", False, ())
            if not outcome.passed:
                failed = number
            yield StepResult(
                number=number,
                name=name,
                title=title,
                expectation=expectation,
                observed=outcome.observed,
                passed=outcome.passed,
                lines=outcome.lines,
                seconds=time.perf_counter() - started,
            )

    def close(self) -> None:
        """Stop clients, the impostor, the cloud; close the registry and the secure element."""
        self.state.close()

    def gateway_events(self) -> list[LogEvent]:
        """Everything the cloud logged during the run (for ``--keep`` and debugging)."""
        return self.state.log.since(0)
