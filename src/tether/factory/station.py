"""The factory station: a device is born with a key that never left its secure element.

For each unit: generate a P-256 key pair inside the secure element, have the element sign a
CSR for the unit's serial, have the factory CA sign the certificate, write the certificate back
into the element next to its key, and append a manufacturing record. The private key exists
only inside the element; the station only ever sees the public key and signatures.

Atomicity per unit: if any step after key generation fails, the half-made unit's key is
destroyed, so a retry with the same serial starts clean and no key without a certificate is
left behind. A unit is "made" only once its record is durable in the manufacturing log.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509

from tether.errors import ConflictError, InvalidInputError, PolicyViolationError, TetherError
from tether.factory.records import ManufacturingLog, ManufacturingRecord
from tether.pki import IssuingCA, Role, sha256_fingerprint, validate_serial
from tether.secure_element import SecureElement, build_csr


class SerialAlreadyMadeError(ConflictError):
    """The manufacturing log already has a unit with this serial."""

    code = "serial_already_made"


@dataclass(frozen=True)
class ProvisionedDevice:
    """A unit the station finished: its certificate and the record written for it."""

    certificate: x509.Certificate
    record: ManufacturingRecord


class FactoryStation:
    """Provision devices one by one or as a production line.

    ``secure_element`` is the unit's element (on a development line, one SoftHSM2 token stands
    in for many units' chips: each key is labelled with its unit's serial).
    """

    def __init__(
        self,
        ca: IssuingCA,
        secure_element: SecureElement,
        log: ManufacturingLog,
        *,
        validity: timedelta | None = None,
    ) -> None:
        if ca.role is not Role.FACTORY:
            raise PolicyViolationError(
                f"the factory station signs with a factory issuing CA, not a {ca.role} CA",
                code="wrong_ca_role",
            )
        self.ca = ca
        self.secure_element = secure_element
        self.log = log
        self.validity = validity
        self._made = log.serials()

    def provision(self, serial: str) -> ProvisionedDevice:
        """Make one unit; on any failure nothing of it remains (no key, no record)."""
        serial = validate_serial(serial)
        if serial in self._made:
            raise SerialAlreadyMadeError(
                f"unit {serial} is already in the manufacturing log {self.log.path}"
            )
        element = self.secure_element
        element.generate_key(serial)  # refuses a label already in use, before anything is made
        try:
            csr = build_csr(element.signer(serial), serial)
            certificate = self.ca.issue_device_certificate(csr, serial, validity=self.validity)
            element.store_certificate(serial, certificate)
            record = ManufacturingRecord(
                serial=serial,
                certificate_fingerprint=sha256_fingerprint(certificate),
                certificate_serial_number=format(certificate.serial_number, "x"),
                issuer_fingerprint=sha256_fingerprint(self.ca.certificate),
                key_location=element.describe_key(serial),
                made_at=datetime.now(UTC),
            )
            self.log.append(record)
        except BaseException as exc:
            try:
                element.delete(serial)
            except TetherError as cleanup:
                # Report the failure that stopped the unit; say what was left behind.
                exc.add_note(f"the key {serial!r} could not be removed: {cleanup.message}")
            raise
        self._made.add(serial)
        return ProvisionedDevice(certificate=certificate, record=record)

    def provision_line(
        self,
        serials: Iterable[str],
        *,
        on_done: Callable[[ProvisionedDevice], None] | None = None,
    ) -> list[ProvisionedDevice]:
        """Make each unit in order; stops at the first failure (units before it stay made)."""
        made = []
        for serial in serials:
            device = self.provision(serial)
            made.append(device)
            if on_done is not None:
                on_done(device)
        return made

    def next_serials(self, prefix: str, count: int, *, width: int = 6) -> list[str]:
        """``count`` serials ``<prefix><number>`` continuing after the highest one in the log."""
        if count < 1:
            raise InvalidInputError(
                f"the count of units to make must be at least 1, not {count}",
                code="factory_bad_count",
            )
        pattern = re.compile(re.escape(prefix) + r"(\d+)$")
        highest = max(
            (int(m.group(1)) for s in self._made if (m := pattern.match(s))),
            default=0,
        )
        serials = [f"{prefix}{n:0{width}d}" for n in range(highest + 1, highest + 1 + count)]
        for serial in (serials[0], serials[-1]):
            validate_serial(serial)
        return serials
