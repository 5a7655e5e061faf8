"""The device agent's side of enrollment and renewal (issue 16), over MQTT 5.

``enroll``: connected with the birth certificate (factory or claim), ask for an operational
certificate for a key in the secure element. ``renew``: connected with the current
operational certificate, ask for a new one for the same SE key (renewal) or for a new key the
SE generates now (rotation, ``new_label``). Either way the CSR is signed inside the SE (the key
never leaves it), the answer's certificate is checked against the key before it is written,
the certificate file is replaced atomically (a crash leaves the old or the new one, never half)
and, for a PKCS#11 key, the certificate is also stored in the token next to its key.

``due_for_renewal`` is the ``connect --renew-at`` rule: renew once ``fraction`` of the
certificate's lifetime has passed (2/3 by default), so short-lived certificates (days) renew
long before they expire, with time to retry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from tether.device.config import CloudEndpoint, DeviceIdentity, FileKey, Pkcs11Key
from tether.device.connection import DeviceClient
from tether.errors import InvalidInputError, PermissionDeniedError
from tether.pki.signer import Signer, SoftwareSigner
from tether.secure_element import Pkcs11SecureElement
from tether.secure_element.csr import build_csr

ENROLL_TOPIC = "$tether/enroll"
RENEW_TOPIC = "$tether/renew"
DEFAULT_RENEW_AT = 2 / 3


class EnrollmentRefusedError(PermissionDeniedError):
    """The cloud refused the enrollment or renewal; ``code`` is the cloud's reason."""

    code = "enrollment_refused"


@dataclass(frozen=True)
class Renewal:
    """What the cloud answered: result (enrolled, renewed, rotated), serial, certificate."""

    result: str
    serial: str
    certificate: x509.Certificate
    key_label: str | None
    replayed: bool


def due_for_renewal(
    certificate: x509.Certificate,
    *,
    fraction: float = DEFAULT_RENEW_AT,
    now: datetime | None = None,
) -> bool:
    """Whether ``fraction`` of the certificate's lifetime has passed."""
    if not 0 < fraction < 1:
        raise InvalidInputError("--renew-at is a fraction of the lifetime between 0 and 1")
    now = now or datetime.now(UTC)
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    return now >= start + (end - start) * fraction


@contextmanager
def _signer(identity: DeviceIdentity, new_label: str | None) -> Iterator[tuple[Signer, object]]:
    """The signer of the key the new certificate is for (generated first when rotating)."""
    key = identity.key
    if isinstance(key, FileKey):
        if new_label is not None:
            raise InvalidInputError(
                "rotation generates the new key in the secure element: use a PKCS#11 key"
            )
        private = load_pem_private_key(key.path.read_bytes(), None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise InvalidInputError(f"{key.path} is not an EC private key")
        yield SoftwareSigner(private), None
        return
    assert isinstance(key, Pkcs11Key)
    with Pkcs11SecureElement.open(key.module, key.token_label, key.pin) as element:
        label = key.key_label
        if new_label is not None:
            element.generate_key(new_label)
            label = new_label
        yield element.signer(label), element


def _ask(
    identity: DeviceIdentity,
    endpoint: CloudEndpoint,
    topic: str,
    *,
    serial: str | None,
    new_label: str | None,
    out: Path | None,
    timeout: float,
) -> Renewal:
    with _signer(identity, new_label) as (signer, element):
        csr = build_csr(signer, serial or identity.serial)
        request: dict[str, str] = {"csr": csr.public_bytes(Encoding.PEM).decode("ascii")}
        if serial is not None:
            request["serial"] = serial
        with DeviceClient(identity, endpoint) as client:
            client.connect(timeout)
            reply = client.request(topic, json.dumps(request).encode(), timeout=timeout)
        try:
            answer = json.loads(reply.payload)
        except ValueError:
            answer = {}
        if not isinstance(answer, dict) or answer.get("result") in (None, "refused"):
            code = answer.get("code", "enrollment_refused") if isinstance(answer, dict) else ""
            text = answer.get("message", "no readable answer") if isinstance(answer, dict) else ""
            raise EnrollmentRefusedError(f"the cloud refused: {text}", code=code or None)
        certificate = x509.load_pem_x509_certificate(str(answer["certificate"]).encode())
        if certificate.public_key() != signer.public_key():
            raise EnrollmentRefusedError(
                "the certificate the cloud returned is not for this key; nothing was written"
            )
        if element is not None:
            label = new_label or identity.key.key_label  # type: ignore[union-attr]
            element.store_certificate(label, certificate)  # type: ignore[attr-defined]
        _write_atomically(out or identity.certificate, certificate.public_bytes(Encoding.PEM))
        return Renewal(
            result=str(answer["result"]),
            serial=str(answer["serial"]),
            certificate=certificate,
            key_label=new_label,
            replayed=bool(answer.get("replayed")),
        )


def enroll(
    identity: DeviceIdentity,
    endpoint: CloudEndpoint,
    *,
    out: Path,
    serial: str | None = None,
    timeout: float = 10.0,
) -> Renewal:
    """Exchange the birth certificate in ``identity`` for an operational one, written to ``out``.

    ``serial`` is for a claim certificate (whose CN is the claim's, not the device's).
    """
    return _ask(
        identity, endpoint, ENROLL_TOPIC, serial=serial, new_label=None, out=out, timeout=timeout
    )


def renew(
    identity: DeviceIdentity,
    endpoint: CloudEndpoint,
    *,
    new_label: str | None = None,
    out: Path | None = None,
    timeout: float = 10.0,
) -> Renewal:
    """Renew the operational certificate (same key), or rotate to ``new_label`` (a new SE key).

    The new certificate replaces ``identity.certificate`` (or goes to ``out``).
    """
    return _ask(
        identity, endpoint, RENEW_TOPIC, serial=None, new_label=new_label, out=out, timeout=timeout
    )


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_bytes(data)
    os.replace(temporary, path)
