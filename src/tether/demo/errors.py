"""Errors of the demo's own set-up (the story's steps report their outcomes as results)."""

from __future__ import annotations

from tether.errors import ConfigurationError, ConflictError


class DemoWorkspaceError(ConflictError):
    """The ``--keep`` directory exists and is not empty: the demo never mixes old files in."""

    code = "demo_workspace_not_empty"


class DemoSetupError(ConfigurationError):
    """The demo could not prepare its secure element (SoftHSM2 token initialisation failed)."""

    code = "demo_setup_failed"


class DemoApiError(ConfigurationError):
    """The demo's own admin API refused a call the story makes (its answer is in the message)."""

    code = "demo_api_refused"


class DemoStepOrderError(ConflictError):
    """A step needs something an earlier step makes, and that step did not make it.

    ``Demo.run`` stops at the first failed step, so this means a step ran out of order (a
    caller running steps by hand, or a new step put before the one it depends on).
    """

    code = "demo_step_out_of_order"
