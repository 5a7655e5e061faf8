"""Secure elements: factory units/s and signatures/s on SoftHSM2 and on a TPM 2.0, same run.

Two figures per token kind, measured in this process through ``Pkcs11SecureElement`` (the
code a factory station and a CA key in a token use):

- ``<kind>_factory_rate``: ``FactoryStation.provision`` units per second with one element
  open for the whole line: key generated in the token, CSR signed in it, certificate issued
  by a factory CA (software key), stored back in the token, manufacturing record written.
- ``<kind>_sign_rate``: ``sign_digest`` per second (CKM_ECDSA over a SHA-256 digest) with
  one key, as a TLS handshake or a CA key in a token would use it.

The TPM is ``swtpm`` (libtpms in software) behind ``tpm2-abrmd`` on a private D-Bus, the same
simulator the tests and ``tether demo --secure-element tpm`` start; its figures measure the
tpm2-pkcs11 + TSS + resource manager path on this CPU, not a TPM chip, whose ECDSA takes tens
of milliseconds on its own. Each measurement runs for at least ``SECONDS``; every repeat uses
fresh tokens, so no token fills up across repeats.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Result, main
from tether.demo.tpm import SimulatedTpm
from tether.demo.workspace import find_softhsm_module, init_softhsm_token, write_softhsm_conf
from tether.factory import FactoryStation, ManufacturingLog
from tether.pki import IssuingCA, Role
from tether.pki.store import CaDirectory, init_issuing, init_root
from tether.secure_element import Pkcs11SecureElement

SECONDS = 1.0  # at least this long per measurement
PASSPHRASE = "bench tokens passphrase"  # noqa: S105 - a throwaway CA in the work directory


def _factory_ca(work: Path) -> IssuingCA:
    root = init_root(work / "root", PASSPHRASE, common_name="Bench Root")
    factory = init_issuing(
        work / "factory", root, PASSPHRASE, PASSPHRASE,
        common_name="Bench Factory CA", role=Role.FACTORY,
    )  # fmt: skip
    return CaDirectory.open(factory.path).issuing(PASSPHRASE)


def _for_at_least(seconds: float, step: Callable[[int], object]) -> float:
    """Call ``step(i)`` for i = 0, 1, ... until ``seconds`` have passed; calls per second."""
    done = 0
    started = time.perf_counter()
    while True:
        step(done)
        done += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed


def measure(
    module: str, label: str, pin: str, ca: IssuingCA, log_path: Path
) -> tuple[float, float]:
    """(factory units/s, signatures/s) on the token ``label`` in ``module``."""
    with Pkcs11SecureElement.open(module, label, pin) as element:
        station = FactoryStation(ca, element, ManufacturingLog(log_path))
        factory_rate = _for_at_least(SECONDS, lambda i: station.provision(f"BENCH-{i:06d}"))
        digest = hashlib.sha256(b"handshake transcript").digest()
        sign_rate = _for_at_least(SECONDS, lambda _: element.sign_digest("BENCH-000000", digest))
    return factory_rate, sign_rate


def run(work: Path, repeats: int) -> Result:
    """Factory and signature rates on SoftHSM2 and on the simulated TPM, ``repeats`` times."""
    result = Result("tokens")
    ca = _factory_ca(work)
    softhsm_module = find_softhsm_module()
    if softhsm_module is None:
        raise RuntimeError("SoftHSM2 is not installed: run ./scripts/install-system-deps")
    util = shutil.which("softhsm2-util")
    if util is None:
        raise RuntimeError("softhsm2-util is missing: run ./scripts/install-system-deps")
    conf = write_softhsm_conf(work / "softhsm")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # read once, when the module is first loaded
    tpm = SimulatedTpm(work / "tpm")
    try:
        os.environ.update(tpm.env)  # likewise for tpm2-pkcs11
        figures = {
            kind: (
                result.figure(f"{kind}_factory_rate", f"{name}: factory units", "units/s"),
                result.figure(f"{kind}_sign_rate", f"{name}: ECDSA P-256 signatures", "sigs/s"),
            )
            for kind, name in (("softhsm2", "SoftHSM2"), ("tpm2", "TPM 2.0 (swtpm)"))
        }
        for repeat in range(repeats):
            soft = init_softhsm_token(util, softhsm_module, conf, label=f"bench-{repeat}")
            factory, sign = figures["softhsm2"]
            rates = measure(soft.module, soft.label, soft.pin, ca, work / f"soft-{repeat}.jsonl")
            factory.runs.append(rates[0])
            sign.runs.append(rates[1])
            label, pin = f"bench-{repeat}", secrets.token_hex(8)
            tpm.add_token(label, pin, secrets.token_hex(8))
            factory, sign = figures["tpm2"]
            rates = measure(tpm.module, label, pin, ca, work / f"tpm-{repeat}.jsonl")
            factory.runs.append(rates[0])
            sign.runs.append(rates[1])
            tpm.remove_token(label)
    finally:
        tpm.stop()
    result.notes += [
        "factory_rate: FactoryStation.provision per second, one element open for the line: "
        "keygen in the token, CSR signed in it, certificate from a software factory CA stored "
        f"back, record appended; >= {SECONDS:.0f} s per repeat, a fresh token each repeat.",
        "sign_rate: Pkcs11SecureElement.sign_digest (CKM_ECDSA over a SHA-256 digest, DER "
        f"out) per second with one key, >= {SECONDS:.0f} s.",
        "TPM 2.0 = swtpm (software libtpms) behind tpm2-abrmd on a private D-Bus, through "
        "tpm2-pkcs11 1.9; a TPM chip signs in tens of ms, so read these as the software "
        "path's cost. The TPM profile reopens the session every 10 keys (object slots).",
        "SoftHSM2's factory rate is bound by its file object store: each new object (key "
        "pair, certificate) is written and synced to disk, tens of ms per unit on this disk.",
    ]
    return result


if __name__ == "__main__":
    main(run)
