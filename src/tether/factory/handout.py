"""What the line hands each unit besides its chip: its certificate chain and the trust file.

The key and the certificate live in the secure element; the device firmware (and any agent
that wants a PEM file, like ``tether device connect --cert``) also needs the certificate chain
as a file, and the file it pins to authenticate the cloud (``DATA/pinned-ca.pem`` of the
cloud: the server issuing CA, then the root). The station writes both per unit::

    <out>/<serial>/certificate.pem   the unit's certificate, then the factory issuing CA
    <out>/<serial>/pinned-ca.pem     the cloud's trust file, byte for byte

Nothing here is secret. A trust file without a server CA is refused up front: a device that
pinned only the root would trust any issuing CA of that root to speak for the cloud.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tether.errors import InvalidInputError, StorageError
from tether.pki.names import is_server_ca

CERTIFICATE_FILE = "certificate.pem"
PINNED_FILE = "pinned-ca.pem"
_MAX_TRUST_FILE = 64 * 1024


class TrustFileError(InvalidInputError):
    """The trust file for devices is unreadable or holds no server CA."""

    code = "factory_trust_file_invalid"


def check_trust_file(data: bytes, source: Path) -> bytes:
    """Return ``data`` if it is a PEM bundle with at least one server CA, else refuse it."""
    if len(data) > _MAX_TRUST_FILE:
        raise TrustFileError(f"the trust file {source} is larger than a CA bundle can be")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TrustFileError(
            f"the trust file {source} is not a PEM certificate bundle: {exc}"
        ) from None
    if not any(is_server_ca(c) for c in certificates):
        raise TrustFileError(
            f"the trust file {source} holds no server issuing CA: give the cloud's "
            "DATA/pinned-ca.pem (the server CA, then the root), never the root alone"
        )
    return data


@dataclass(frozen=True)
class Handout:
    """Writes each made unit's files under ``directory``."""

    directory: Path
    issuer: x509.Certificate
    trust_file: bytes | None = None

    def write(self, serial: str, certificate: x509.Certificate) -> Path:
        """Write the unit's files (atomically, each replaced whole); returns its folder."""
        folder = self.directory / serial
        chain = certificate.public_bytes(Encoding.PEM) + self.issuer.public_bytes(Encoding.PEM)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomically(folder / CERTIFICATE_FILE, chain)
            if self.trust_file is not None:
                _write_atomically(folder / PINNED_FILE, self.trust_file)
        except OSError as exc:
            raise StorageError(
                f"unit {serial} is made (key, certificate and record), but its files could not "
                f"be written to {folder}: {exc.strerror}; fix the directory and export again",
                code="factory_handout_failed",
            ) from exc
        return folder


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
