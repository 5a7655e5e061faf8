"""A real TPM 2.0 for tests (swtpm + tpm2-abrmd + tpm2-pkcs11), used like ``tests.softhsm``.

The daemons are ``tether.demo.tpm.SimulatedTpm``'s (one launcher for the demo and the tests).
tpm2-pkcs11 reads its store and TCTI when a process first initialises the module, so one TPM
serves the whole pytest session: ``Tpm`` puts its variables into this process's environment
(subprocesses such as pkcs11-tool and ``tether`` inherit them) and puts them back on
``stop()``. Each test asks for its own token with a fresh label.

swtpm's dictionary-attack protection is relaxed at start: tests try wrong PINs on purpose,
and a locked-out TPM would fail every later test for a reason no test is about.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

from tests.softhsm import Token
from tether.demo.tpm import SimulatedTpm


class Tpm(SimulatedTpm):
    """A ``SimulatedTpm`` whose variables are set in ``os.environ`` while it runs."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._saved_env = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)
        subprocess.run(
            ["tpm2_dictionarylockout", "--setup-parameters", "--max-tries=1000",
             "--recovery-time=1", "--lockout-recovery-time=1", "--clear-lockout"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip

    def new_token(self, label: str | None = None, pin: str | None = None) -> Token:
        """A fresh token in the TPM's store (``tpm2_ptool addtoken``)."""
        label = label or f"tpm-{secrets.token_hex(4)}"
        pin = pin or secrets.token_hex(8)
        so_pin = secrets.token_hex(8)
        self.add_token(label, pin, so_pin)
        return Token(module=self.module, label=label, pin=pin, so_pin=so_pin)

    def stop(self) -> None:
        super().stop()
        for key, value in getattr(self, "_saved_env", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
