"""What every step uses: the story's names and bounds, the outcome type, small file writers.

Secrets shown in a result are cut to a four-character hint (``hint``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tether.device import CloudEndpoint, DeviceClient, DeviceIdentity
from tether.errors import TetherError
from tether.pki import Role
from tether.pki.keys import private_key_pem

ACTOR = "demo:operator"
ADMIN = "demo-admin"
FACTORY_SERIAL = "TTH-000001"
CONSOLE_SERIAL = "CON-000001"
ROGUE_SERIAL = "TTH-666666"
SERVICE_NAME = "demo-ingest"
ISSUING_ROLES = (Role.FACTORY, Role.DEVICE, Role.SERVICE, Role.SERVER)
# A refused handshake needs no more than this: the gateway answers at once, the device agent
# diagnoses an untrusted server after about a second.
REFUSAL_TIMEOUT_S = 4.0
LOG_WAIT_S = 5.0
# What the gateway logs when it refuses a client certificate during or after TLS.
CLIENT_REFUSAL_CODES = frozenset(
    {"ca_not_registered", "certificate_signature_invalid", "certificate_verify_failed"}
)


@dataclass(frozen=True)
class Outcome:
    """What a step observed, whether the system behaved as it should, and its detail lines."""

    observed: str
    passed: bool
    lines: tuple[str, ...]


def new_passphrase() -> str:
    """A fresh random passphrase, held in memory only."""
    return secrets.token_urlsafe(24)


def hint(secret: str) -> str:
    """The most of ``secret`` a result may show."""
    return f"{secret[:4]}… ({len(secret)} random characters, kept in memory only)"


def short(fingerprint: str) -> str:
    return fingerprint[:16] + "…"


def cn(name: x509.Name) -> str:
    return name.rfc4514_string()


def write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` with ``mode``, making its folder (0700) first."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_bytes(data)
    path.chmod(mode)
    return path


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    """Write ``key`` unencrypted, mode 0600 (the demo's stand-ins and the emulator's device)."""
    return write(path, private_key_pem(key), 0o600)


def refusal(identity: DeviceIdentity, endpoint: CloudEndpoint) -> TetherError | None:
    """Connect ``identity`` to ``endpoint`` expecting a refusal: the error, or None if accepted.

    The client is disconnected either way (an accepted one must not stay connected).
    """
    client = DeviceClient(identity, endpoint)
    try:
        client.connect(REFUSAL_TIMEOUT_S)
    except TetherError as exc:
        return exc
    finally:
        client.disconnect()
    return None
