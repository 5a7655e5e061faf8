"""Issue and register device certificates in a loop until killed (the crash-safety writer).

Usage: python -m tests.attack.scripts.issue_loop DATA_DIR CA_CERT CA_KEY OUT_DIR PREFIX

For each unit: a fresh key, a certificate from the issuing CA, the device and the certificate
registered; only after the registry call returned (committed) does it print
``ISSUED <serial> <fingerprint>`` and flush. The test kills it with SIGKILL at any moment and
then checks that every line it printed is in the registry.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tether.cloud.registry import Provisioning, Registry
from tether.cloud.settings import CloudSettings
from tether.pki import IssuingCA, SoftwareSigner, generate_key, load_certificate, sha256_fingerprint
from tether.pki.store import pem


def main(argv: list[str]) -> int:
    data_dir, ca_cert, ca_key, out_dir, prefix = argv
    certificate = load_certificate(Path(ca_cert).read_bytes())
    key = serialization.load_pem_private_key(Path(ca_key).read_bytes(), password=None)
    ca = IssuingCA(certificate, SoftwareSigner(key))  # type: ignore[arg-type]
    issuer = sha256_fingerprint(certificate)
    out = Path(out_dir)
    settings = CloudSettings.load(Path(data_dir))
    with Registry.open(settings.database_url) as registry:
        number = 0
        while True:
            number += 1
            serial = f"{prefix}{number:06d}"
            device_key = generate_key()
            issued = ca.issue_device_certificate_for_key(device_key.public_key(), serial)
            (out / f"{serial}.crt").write_bytes(pem(issued))
            (out / f"{serial}.key").write_bytes(
                device_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            registry.add_device(serial, provisioning=Provisioning.CONSOLE, actor="test:crash")
            record = registry.add_certificate(
                issued, device_serial=serial, issuer_fingerprint=issuer, actor="test:crash"
            )
            print(f"ISSUED {serial} {record.fingerprint}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
