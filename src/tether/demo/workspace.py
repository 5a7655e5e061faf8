"""The demo's workspace directory and its token: SoftHSM2, or a simulated TPM 2.0.

SoftHSM2 reads ``SOFTHSM2_CONF`` once, when a process first loads the module; so the CLI
writes the configuration here, sets the variable, and only then lets anything load the
module. The token is initialised with ``softhsm2-util`` in a subprocess given that same
configuration explicitly (domain code passes settings down, it does not read the environment).
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tether.demo.errors import DemoSetupError, DemoWorkspaceError
from tether.demo.tpm import SimulatedTpm

SOFTHSM_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)
TOKEN_LABEL = "tether-demo"  # noqa: S105 - a label, not a secret
_INIT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SoftHsmToken:
    """An initialised SoftHSM2 token: the module serving it, its configuration and user PIN."""

    module: str
    conf: Path
    label: str
    pin: str = field(repr=False)


@dataclass(frozen=True)
class TpmToken:
    """A tpm2-pkcs11 token on the demo's simulated TPM: module, label, user PIN, the daemons."""

    module: str
    label: str
    pin: str = field(repr=False)
    tpm: SimulatedTpm = field(repr=False, compare=False)


def init_tpm_token(root: Path) -> TpmToken:
    """Start a simulated TPM in ``root`` and add the demo's token to its store (random PINs).

    The caller puts ``token.tpm.env`` into the process environment before anything loads
    the module, and stops ``token.tpm`` at the end. ``DemoSetupError`` if it cannot start.
    """
    tpm = SimulatedTpm(root)
    try:
        pin = secrets.token_hex(8)
        tpm.add_token(TOKEN_LABEL, pin, secrets.token_hex(8))
    except BaseException:
        tpm.stop()
        raise
    return TpmToken(module=tpm.module, label=TOKEN_LABEL, pin=pin, tpm=tpm)


def find_softhsm_module(candidates: tuple[str, ...] = SOFTHSM_MODULE_CANDIDATES) -> str | None:
    """The first SoftHSM2 PKCS#11 module that exists, or None when SoftHSM2 is not installed."""
    for candidate in candidates:
        if Path(candidate).is_file():
            return candidate
    return None


def prepare_workspace(keep: Path | None) -> Path:
    """The directory the demo works in: ``keep`` (created, must be empty) or a new temporary one.

    Refuses a ``keep`` directory that exists and holds anything (``DemoWorkspaceError``): the
    demo's CAs are never written over, or next to, someone's files.
    """
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="tether-demo-"))
    if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        raise DemoWorkspaceError(
            f"{keep} exists and is not empty; give --keep a new or empty directory"
        )
    keep.mkdir(parents=True, exist_ok=True)
    keep.chmod(0o700)
    return keep


def write_softhsm_conf(directory: Path) -> Path:
    """Write a SoftHSM2 configuration keeping its tokens under ``directory``; returns its path."""
    tokens = directory / "tokens"
    tokens.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    return conf


def init_softhsm_token(
    util: str, module: str, conf: Path, label: str = TOKEN_LABEL
) -> SoftHsmToken:
    """Initialise a token with random PINs using the ``softhsm2-util`` at ``util``.

    Raises ``DemoSetupError`` when the tool fails or hangs; nothing else is touched.
    """
    pin = secrets.token_hex(8)
    so_pin = secrets.token_hex(8)
    command = [
        util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin,
    ]  # fmt: skip
    try:
        subprocess.run(
            command,
            check=True,
            capture_output=True,
            timeout=_INIT_TIMEOUT_S,
            env={"SOFTHSM2_CONF": str(conf)},
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or str(exc)
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace").strip()
        raise DemoSetupError(
            f"softhsm2-util could not initialise the demo token: {detail}; check the "
            "softhsm2 package or run the demo with --secure-element emulator"
        ) from None
    return SoftHsmToken(module=module, conf=conf, label=label, pin=pin)
