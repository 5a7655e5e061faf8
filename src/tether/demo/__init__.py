"""``tether demo``: the whole story of DESIGN.md run for real, step by step, on one machine.

The steps are domain code that return frozen ``StepResult`` values and never print; the CLI
(``tether.cli.demo``) renders them as they arrive. Everything lives in one workspace
directory: CA directories, the cloud's data directory, the secure element (a SoftHSM2
token, a token on a simulated TPM 2.0, or the software emulator), device files and the demo's
stand-ins for peers (a rogue CA, an impostor server).
"""

from tether.demo.errors import DemoSetupError, DemoWorkspaceError
from tether.demo.results import StepResult
from tether.demo.state import DemoOptions
from tether.demo.story import STEP_TITLES, Demo
from tether.demo.workspace import (
    SoftHsmToken,
    TpmToken,
    find_softhsm_module,
    init_softhsm_token,
    init_tpm_token,
    prepare_workspace,
    write_softhsm_conf,
)

__all__ = [
    "STEP_TITLES",
    "Demo",
    "DemoOptions",
    "DemoSetupError",
    "DemoWorkspaceError",
    "SoftHsmToken",
    "StepResult",
    "TpmToken",
    "find_softhsm_module",
    "init_softhsm_token",
    "init_tpm_token",
    "prepare_workspace",
    "write_softhsm_conf",
]
