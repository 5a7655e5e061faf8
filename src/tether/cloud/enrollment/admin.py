"""The admin's side of enrollment: claims and one-time enrollment tokens.

A mixin of :class:`~tether.cloud.operations.AdminOperations` (the one admin service every
write goes through), kept here so enrollment's admin writes sit next to enrollment.

- A claim certificate is signed by the cloud's online (operational) CA with subject
  ``CN=claim.<name>``, recorded bound to no device, with its policy. Its key comes from a CSR
  (made wherever the firmware's key lives) or is generated here and returned once: a claim
  key is shared by a batch by design, so escrow is not the risk it is for an operational key;
  its policy (serials or count, expiry) bounds what a leaked claim can do.
- A one-time enrollment token is 32 random bytes (URL-safe text), returned once; the registry
  keeps its SHA-256. It enrolls exactly the serial it was made for, once, before it expires.
- ``valid_for`` is checked here, once, for every door (API, CLI, Python): more than zero and
  at most ``MAX_CLAIM_VALIDITY`` (ten years: a batch's claim outlives a production run) or
  ``MAX_TOKEN_VALIDITY`` (one year: a token is for one device's first start, soon).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from tether.cloud.enrollment.service import CLAIM_PREFIX, token_hash
from tether.cloud.registry.enrollment import ClaimRecord
from tether.errors import InvalidInputError
from tether.pki import generate_key, load_csr, validate_serial
from tether.pki.keys import private_key_pem
from tether.pki.store import pem

if TYPE_CHECKING:
    from tether.cloud.registry import Registry
    from tether.pki import IssuingCA

MAX_CLAIM_NAME = 64 - len(CLAIM_PREFIX)
MAX_CLAIM_VALIDITY = timedelta(days=3650)
MAX_TOKEN_VALIDITY = timedelta(days=365)


class ValidityInvalidError(InvalidInputError):
    """A claim's or token's ``valid_for`` is not positive, or longer than allowed."""

    code = "valid_for_invalid"


def valid_for_hours(hours: int) -> timedelta:
    """``valid_for`` as the API and the CLI take it (whole hours); too large to represent is
    refused like any other out-of-range value, not an OverflowError."""
    try:
        return timedelta(hours=hours)
    except OverflowError:
        raise ValidityInvalidError(f"valid_for must be a number of hours, not {hours}") from None


def check_valid_for(valid_for: timedelta, most: timedelta, what: str) -> timedelta:
    """``valid_for`` if it is in (0, most]; else a refusal naming the bound in hours."""
    if not timedelta(0) < valid_for <= most:
        hours = int(most.total_seconds() // 3600)
        raise ValidityInvalidError(
            f"{what} valid_for must be more than 0 and at most {hours} hours, "
            f"not {valid_for.total_seconds() / 3600:g}"
        )
    return valid_for


@dataclass(frozen=True)
class ClaimBundle:
    """A new claim: its record, its certificate, and its key if the cloud made it (once)."""

    claim: ClaimRecord
    certificate_pem: str
    private_key_pem: str | None


@dataclass(frozen=True)
class IssuedEnrollmentToken:
    """A new one-time token: shown once, only its hash is kept."""

    token: str
    serial: str
    expires_at: datetime


class EnrollmentAdmin:
    """Claims and enrollment tokens (mixed into AdminOperations)."""

    registry: Registry

    def _ca(self, what: str) -> tuple[IssuingCA, str]:  # provided by AdminOperations
        raise NotImplementedError

    def create_claim(
        self,
        name: str,
        *,
        serials: Sequence[str] | None = None,
        max_enrollments: int | None = None,
        valid_for: timedelta = timedelta(days=30),
        csr_pem: bytes | None = None,
        actor: str,
    ) -> ClaimBundle:
        """A claim certificate (CN=claim.<name>) and its policy; audited as ``claim.add``."""
        if len(name) > MAX_CLAIM_NAME:
            validate_serial("-" * 65)  # the serial grammar's own refusal, one message
        serial = validate_serial(CLAIM_PREFIX + name)
        check_valid_for(valid_for, MAX_CLAIM_VALIDITY, "a claim's")
        if serials is not None:  # refused before anything is signed
            serials = [validate_serial(s) for s in serials]
        ca, fingerprint = self._ca("claim certificates")
        key = None
        if csr_pem is not None:
            certificate = ca.issue_device_certificate(load_csr(csr_pem), serial, validity=valid_for)
        else:
            key = generate_key()
            certificate = ca.issue_device_certificate_for_key(
                key.public_key(), serial, validity=valid_for
            )
        claim = self.registry.add_claim(
            name,
            certificate,
            issuer_fingerprint=fingerprint,
            serials=serials,
            max_enrollments=max_enrollments,
            expires_at=certificate.not_valid_after_utc,
            actor=actor,
        )
        return ClaimBundle(
            claim=claim,
            certificate_pem=pem(certificate).decode("ascii"),
            private_key_pem=None if key is None else private_key_pem(key).decode("ascii"),
        )

    def create_enrollment_token(
        self, serial: str, *, valid_for: timedelta = timedelta(days=7), actor: str
    ) -> IssuedEnrollmentToken:
        """A one-time token that enrolls ``serial`` once; the token is in the result only."""
        serial = validate_serial(serial)
        check_valid_for(valid_for, MAX_TOKEN_VALIDITY, "an enrollment token's")
        token = secrets.token_urlsafe(32)
        expires = datetime.now(UTC) + valid_for
        self.registry.add_enrollment_token(
            token_hash(token), serial=serial, expires_at=expires, actor=actor
        )
        return IssuedEnrollmentToken(token=token, serial=serial, expires_at=expires)

    def list_claims(self) -> list[ClaimRecord]:
        """Every claim, by name (read-only; here so both doors list them the same way)."""
        return self.registry.list_claims()

    def request_renewal(self, serial: str, *, actor: str) -> None:
        """Ask a connected device to renew now (server-side push); audited.

        The audit row ``device.renew_requested`` is the message: the gateway's enrollment
        handler (``enrollment/mqtt.py``) follows the log and publishes
        ``devices/<serial>/tether/renew-now`` to the device's live session.
        """
        device = self.registry.get_device(serial)
        self.registry.audit(
            actor=actor, action="device.renew_requested", target=device.serial, details={}
        )
