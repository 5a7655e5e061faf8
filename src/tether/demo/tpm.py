"""A simulated TPM 2.0 for the demo and the tests: swtpm, a private D-Bus, tpm2-abrmd, a store.

``SimulatedTpm(root)`` starts, all inside ``root`` and on loopback:

* ``swtpm`` (libtpms, the TPM the kernel would otherwise give) on two TCP sockets that this
  process binds first and hands over as file descriptors, so no port is ever raced for;
* a ``dbus-daemon`` with a generated session configuration listening on a socket in ``root``
  (never the machine's session or system bus);
* ``tpm2-abrmd`` on that bus, in front of swtpm. Without the resource manager the TPM runs
  out of object slots after a few keys (TPM_RC_OBJECT_MEMORY, 0x902): tpm2-pkcs11 keeps every
  key it uses loaded, and only a resource manager swaps them out;
* a tpm2-pkcs11 store (``tpm2_ptool init``), in which ``new_token()`` adds tokens.

tpm2-pkcs11 reads ``TPM2_PKCS11_STORE`` and ``TPM2_PKCS11_TCTI`` (and the TCTI reads
``DBUS_SESSION_BUS_ADDRESS``) when a process first initialises the module. ``env`` holds
those variables; the caller (the demo's CLI, the test fixture) puts them into the process
environment before anything loads the module. ``stop()`` ends the three daemons.

This is a simulator and says so: a real TPM's keys survive a reboot and are bound to that
chip; swtpm's state is a directory in ``root``. The README says how to use a real TPM.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tether.demo.errors import DemoSetupError

MODULE_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
    "/usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
    "/usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1",
    "/usr/lib/aarch64-linux-gnu/libtpm2_pkcs11.so.1",
)
TOOLS = ("swtpm", "dbus-daemon", "tpm2-abrmd", "tpm2_ptool", "tpm2_getcap")
TCTI = "tabrmd:bus_type=session"
# Per-connection transient objects tpm2-abrmd will swap in and out. Its default (27) is a
# dozen key pairs in one session; 100 is its maximum.
MAX_TRANSIENTS = 100
# tpm2-pkcs11 opens a connection per token in its store in every process that loads it
# (pkcs11-tool, OpenSSL, awscrt, tether): abrmd's default of 27 is soon reached. 100 is the
# most it takes; the test fixture also removes each test's token afterwards.
MAX_CONNECTIONS = 100
START_TIMEOUT = 20.0

_DBUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>{address}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def tpm2_pkcs11_module() -> str:
    """The tpm2-pkcs11 PKCS#11 module; ``DemoSetupError`` when the package is missing."""
    for candidate in MODULE_CANDIDATES:
        if os.path.exists(candidate):
            return candidate
    raise DemoSetupError(
        "tpm2-pkcs11 is not installed: run ./scripts/install-system-deps "
        "(Debian package libtpm2-pkcs11-1)"
    )


def _free_port_pair() -> int:
    """A loopback port P with P+1 also free: the swtpm TCTI finds the control port at P+1.

    swtpm binds the ports itself (its ``fd=`` options take connected sockets, not listening
    ones), so a port can still be taken in between; ``_start_swtpm`` retries then.
    """
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise DemoSetupError("no two adjacent free loopback ports for swtpm")


class SimulatedTpm:
    """swtpm + dbus-daemon + tpm2-abrmd + a tpm2-pkcs11 store in ``root``; ``stop()`` ends them.

    Raises ``DemoSetupError`` when a tool is missing or a daemon does not come up (after
    stopping whatever did start).
    """

    def __init__(self, root: Path, *, max_transients: int = MAX_TRANSIENTS) -> None:
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            raise DemoSetupError(f"{', '.join(missing)} missing: run ./scripts/install-system-deps")
        self.module = tpm2_pkcs11_module()
        self.root = root
        self.store = root / "store"
        self.store.mkdir(parents=True, exist_ok=True)
        self.max_transients = max_transients
        self._processes: list[subprocess.Popen[bytes]] = []
        try:
            self.port = self._start_swtpm()
            self.bus_address = self._start_dbus()
            self.env = {
                "DBUS_SESSION_BUS_ADDRESS": self.bus_address,
                "TPM2_PKCS11_STORE": str(self.store),
                "TPM2_PKCS11_TCTI": TCTI,
                "TPM2TOOLS_TCTI": TCTI,
            }
            self._start_abrmd()
            self._ptool("init", "--path", str(self.store))
        except BaseException:
            self.stop()
            raise

    # -- daemons -------------------------------------------------------------------------

    def _log(self, name: str) -> int:
        return os.open(self.root / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _spawn(self, name: str, args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        log = self._log(name)
        try:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                **kwargs,  # type: ignore[call-overload]
            )
        finally:
            os.close(log)
        self._processes.append(process)
        return process

    def _start_swtpm(self) -> int:
        state = self.root / "state"
        state.mkdir(exist_ok=True)
        for _ in range(5):
            port = _free_port_pair()
            process = self._spawn(
                "swtpm",
                [
                    "swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
                    "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                    "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
                    "--flags", "not-need-init,startup-clear",
                ],
            )  # fmt: skip
            deadline = time.monotonic() + START_TIMEOUT
            while process.poll() is None and time.monotonic() < deadline:
                with socket.socket() as probe:
                    answered = probe.connect_ex(("127.0.0.1", port + 1)) == 0
                # Someone else may own port + 1 while swtpm lost ``port`` and is exiting: the
                # answer counts only if swtpm is still running a moment later.
                time.sleep(0.1 if answered else 0.02)
                if answered and process.poll() is None:
                    return port
            # Lost the port to someone else (or too slow): try another pair.
            self._processes.remove(process)
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        raise DemoSetupError(f"swtpm did not start; see {self.root / 'swtpm.log'}")

    def _start_dbus(self) -> str:
        address = f"unix:path={self.root / 'bus'}"
        config = self.root / "dbus-session.conf"
        config.write_text(_DBUS_CONFIG.format(address=address))
        self._spawn("dbus", ["dbus-daemon", f"--config-file={config}", "--nofork"])
        deadline = time.monotonic() + START_TIMEOUT
        while not (self.root / "bus").exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise DemoSetupError(f"dbus-daemon did not start; see {self.root / 'dbus.log'}")
            time.sleep(0.02)
        return address

    def _start_abrmd(self) -> None:
        args = [
            "tpm2-abrmd", "--session", f"--tcti=swtpm:host=127.0.0.1,port={self.port}",
            "--flush-all", f"--max-transients={self.max_transients}",
            f"--max-connections={MAX_CONNECTIONS}",
        ]  # fmt: skip
        if os.geteuid() == 0:
            args.append("--allow-root")  # it refuses root otherwise; CI runs as root
        self._spawn("abrmd", args, env={**os.environ, **self.env})
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            self._check_alive()
            probe = subprocess.run(
                ["tpm2_getcap", "properties-fixed"],
                capture_output=True, timeout=10, env={**os.environ, **self.env},
            )  # fmt: skip
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise DemoSetupError(f"tpm2-abrmd did not answer; see {self.root / 'abrmd.log'}")
            time.sleep(0.05)

    def _check_alive(self) -> None:
        for process in self._processes:
            if process.poll() is not None:
                raise DemoSetupError(
                    f"{process.args[0]} exited with {process.returncode}; logs in {self.root}"
                )

    def stop(self) -> None:
        """End the daemons (abrmd, the bus, swtpm: reverse start order); safe to call twice."""
        for process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._processes.clear()

    # -- tokens --------------------------------------------------------------------------

    def _ptool(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["tpm2_ptool", *args],
            capture_output=True, text=True, timeout=60, env={**os.environ, **self.env},
        )  # fmt: skip
        if result.returncode != 0:
            raise DemoSetupError(f"tpm2_ptool {args[0]} failed: {result.stderr.strip()}")
        return result

    def add_token(self, label: str, pin: str, so_pin: str) -> None:
        """Add a token to the store under primary key 1 (``tpm2_ptool addtoken``)."""
        self._ptool(
            "addtoken", "--pid=1", f"--label={label}", f"--userpin={pin}",
            f"--sopin={so_pin}", f"--path={self.store}",
        )  # fmt: skip

    def remove_token(self, label: str) -> None:
        """Remove a token and its keys from the store (``tpm2_ptool rmtoken``)."""
        self._ptool("rmtoken", f"--label={label}", f"--path={self.store}")

    def running(self) -> bool:
        """True while all three daemons are up."""
        return bool(self._processes) and all(p.poll() is None for p in self._processes)

    def __enter__(self) -> SimulatedTpm:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
