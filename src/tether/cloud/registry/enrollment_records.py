"""Enrollment's value objects and refusals (split from ``enrollment.py``, the store).

Frozen records callers get back (``ClaimRecord``, ``EnrollmentRecord``), the write the
enrollment service decides (``EnrollmentWrite``), and the errors with their stable codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509

from tether.errors import ConflictError, NotFoundError, PermissionDeniedError


class EnrollmentTokenError(PermissionDeniedError):
    """The one-time enrollment token is unknown, expired or already spent."""

    code = "enrollment_token_invalid"


class EnrollmentTokenUsedError(EnrollmentTokenError):
    """The token was spent by an earlier enrollment (a replay): nothing is issued."""

    code = "enrollment_token_used"


class ClaimPolicyError(PermissionDeniedError):
    """The claim's policy does not allow this enrollment (serial, count or expiry)."""

    code = "claim_policy_refused"


class ClaimNotFoundError(NotFoundError):
    """No claim with this name (or for this certificate) exists."""

    code = "claim_not_found"


class ClaimExistsError(ConflictError):
    """A claim with this name already exists."""

    code = "claim_exists"


class SerialAlreadyEnrolledError(ConflictError):
    """The serial already has an operational certificate; it renews with that one instead."""

    code = "serial_already_enrolled"


class EnrollmentDeviceDisabledError(PermissionDeniedError):
    """A disabled device is not given a new certificate."""

    code = "device_disabled"


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    """A claim and its policy; ``serials`` None means any serial."""

    name: str
    certificate_fingerprint: str
    serials: tuple[str, ...] | None
    max_enrollments: int | None
    enrollments: int
    expires_at: datetime

    def refusal(self, serial: str, now: datetime) -> str | None:
        """Why this claim may not enroll ``serial`` now, or None if it may."""
        if now >= self.expires_at:
            return f"the claim {self.name!r} expired at {self.expires_at:%Y-%m-%d %H:%M:%SZ}"
        if self.serials is not None and serial not in self.serials:
            return f"the claim {self.name!r} does not cover the serial {serial!r}"
        if self.max_enrollments is not None and self.enrollments >= self.max_enrollments:
            return f"the claim {self.name!r} has used all {self.max_enrollments} enrollments"
        return None


@dataclass(frozen=True, slots=True)
class EnrollmentRecord:
    """The stored result of one enroll request (what a retry gets back)."""

    request_digest: str
    serial: str
    credential: str
    result: str
    certificate_pem: str
    certificate_fingerprint: str
    attributes: Mapping[str, str]
    created_at: datetime
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class EnrollmentWrite:
    """Everything ``record_enrollment`` writes, decided by the enrollment service.

    ``previous_owner``: the CA the serial may be moved from (the birth certificate's CA for a
    factory device), else the device must be new, unbound, or (``may_reenroll``) already
    under the operational CA. ``predecessor``: the certificate the new one succeeds (the birth
    or current certificate), retired ``overlap`` after now. ``attributes`` and ``groups``
    (the provisioning hook's) become the device's own labels in the same transaction
    (``labels.apply_labels``), and the attributes stay on the enrollment row for a retry's
    answer.
    """

    request_digest: str
    serial: str
    credential: str
    result: str
    certificate: x509.Certificate
    operational_ca: str
    actor: str
    overlap: timedelta
    previous_owner: str | None = None
    may_reenroll: bool = False
    predecessor: str | None = None
    claim: str | None = None
    token_hash: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
