"""The hygiene audit: what in a fleet's identities needs an operator's attention before it bites.

Modelled on AWS IoT Device Defender's audit checks, over Tether's registry (and, for two
checks, a running gateway's live view). One function, :func:`audit`, serves every surface:
``tether audit DATA`` (table or ``--json``, exit status 1 on findings, for cron and CI) and
``GET /api/v1/audit/hygiene``. Each finding has a stable :class:`FindingCode`:

- ``certificate_expiring``: an active certificate expires within ``certificate_days`` (or
  already has); the device stops connecting that day.
- ``ca_expiring``: an active registered CA expires within ``ca_days``; every certificate
  under it stops with it.
- ``ca_allows_jit``: an active CA registers unknown devices on first connect. Sometimes meant
  (a factory line), always worth a look: a stolen key of that CA mints new devices.
- ``device_not_seen``: an enabled device with an active certificate has not connected for
  ``unseen_days`` (or never did, ``unseen_days`` after it was created): a lost unit whose
  identity is still trusted.
- ``certificate_profile_violation``: a registered certificate does not fit the client profile
  (:func:`tether.pki.lint.client_violations`, the same rules the gateway applies at each
  handshake, so such a certificate is refused today; it usually predates a profile change).
- ``revoked_certificate_connected``: a live session uses a certificate the registry says is
  revoked or inactive, or a device that is disabled (the change feed should have dropped it:
  the feed is behind or broken). Needs the live view.
- ``certificate_used_twice``: one certificate kept taking its own session over from another
  address (two devices sharing one identity, typically a cloned key fighting for the
  session). Needs the live view. Tether keeps one session per identity, so "two connections
  at once" shows as take-overs between addresses, which the gateway records; one take-over is
  a device that changed networks, two or more is counted (``gateway.stats``).

**The live view.** The registry does not know who is connected; the gateway does. The CLI
and the API are other processes, so they read it from the gateway's observability listener
(``GET /sessions`` on ``metrics.port``, loopback by default; see
:mod:`tether.cloud.observability.endpoints`). Without it (the gateway is not running, or
``--no-live``) the two live checks are listed as *skipped* with the reason, never silently
passed.

Reading: the registry is read page by page through its public listing methods (1,000 rows a
page), once per run. A large fleet's audit is an offline job: run it from cron, not per request.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from tether.cloud.registry import (
    CAStatus,
    CertificateRecord,
    CertState,
    DeviceRecord,
    DeviceStatus,
    Page,
    Registry,
)
from tether.pki.lint import client_violations

PAGE = 1000
T = TypeVar("T")


class FindingCode(enum.StrEnum):
    """What a finding is about; stable, for alerting and scripts."""

    CERTIFICATE_EXPIRING = "certificate_expiring"
    CA_EXPIRING = "ca_expiring"
    CA_ALLOWS_JIT = "ca_allows_jit"
    DEVICE_NOT_SEEN = "device_not_seen"
    CERTIFICATE_PROFILE = "certificate_profile_violation"
    REVOKED_CONNECTED = "revoked_certificate_connected"
    CERTIFICATE_USED_TWICE = "certificate_used_twice"


LIVE_CHECKS = (FindingCode.REVOKED_CONNECTED, FindingCode.CERTIFICATE_USED_TWICE)


@dataclass(frozen=True)
class HygieneOptions:
    """Thresholds in days (each a positive whole number)."""

    certificate_days: int = 30
    ca_days: int = 90
    unseen_days: int = 30

    def __post_init__(self) -> None:
        """Refuse a threshold that is not a positive number of days."""
        for name in ("certificate_days", "ca_days", "unseen_days"):
            days = getattr(self, name)
            if isinstance(days, bool) or not isinstance(days, int) or days < 1:
                raise ValueError(f"{name} must be a whole number of days, at least 1")


@dataclass(frozen=True)
class LiveSession:
    """One connected session as the gateway reports it."""

    identity: str
    certificate_fingerprint: str
    peer: str


@dataclass(frozen=True)
class ContestedCertificate:
    """A certificate whose session was taken over from another address."""

    identity: str
    certificate_fingerprint: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class LiveView:
    """What a running gateway says about its sessions."""

    sessions: tuple[LiveSession, ...]
    contested: tuple[ContestedCertificate, ...] = ()


@dataclass(frozen=True)
class HygieneFinding:
    """One problem: its code, what it is about (a serial, a fingerprint), and what to do."""

    code: FindingCode
    subject: str
    message: str
    fingerprint: str | None = None
    due: datetime | None = None  # when it expires, or when the device was last seen


@dataclass(frozen=True)
class HygieneReport:
    """Every finding of one run, the thresholds used, and the checks that could not run."""

    at: datetime
    options: HygieneOptions
    findings: tuple[HygieneFinding, ...]
    skipped: dict[str, str] = field(default_factory=dict)  # check code -> why

    @property
    def clean(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready data (what ``--json`` prints and the API returns)."""
        return {
            "at": self.at.isoformat(),
            "options": asdict(self.options),
            "clean": self.clean,
            "findings": [
                {
                    "code": f.code.value,
                    "subject": f.subject,
                    "message": f.message,
                    "fingerprint": f.fingerprint,
                    "due": None if f.due is None else f.due.isoformat(),
                }
                for f in self.findings
            ],
            "skipped": dict(self.skipped),
        }


def _pages(fetch: Callable[..., Page[T]]) -> Iterator[T]:
    offset = 0
    while True:
        page = fetch(offset=offset, limit=PAGE)
        yield from page.items
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return


def _day(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d")


def audit(
    registry: Registry,
    options: HygieneOptions | None = None,
    *,
    live: LiveView | None = None,
    live_unavailable: str = "no live view of the gateway was given",
    now: datetime | None = None,
) -> HygieneReport:
    """Run every check over ``registry`` (and ``live``, when given); never changes anything.

    Raises the registry's ``TetherError`` if it cannot be read.
    """
    options = options or HygieneOptions()
    now = now or datetime.now(UTC)
    findings: list[HygieneFinding] = []
    cas = registry.list_cas()
    for ca in cas:
        if ca.status != CAStatus.ACTIVE:
            continue
        if ca.not_after <= now + timedelta(days=options.ca_days):
            findings.append(
                HygieneFinding(
                    FindingCode.CA_EXPIRING,
                    ca.subject,
                    f"CA {ca.subject} ({ca.role.value}) expires {_day(ca.not_after)}; stand up "
                    "its successor and move its devices before then",
                    ca.fingerprint,
                    ca.not_after,
                )
            )
        if ca.allow_auto_registration:
            findings.append(
                HygieneFinding(
                    FindingCode.CA_ALLOWS_JIT,
                    ca.subject,
                    f"CA {ca.subject} registers unknown devices on first connect; turn it off "
                    "once the line that needs it is done",
                    ca.fingerprint,
                )
            )

    certificates = list(_pages(registry.list_certificates))
    active_devices: set[str] = set()
    for cert in certificates:
        if cert.state != CertState.ACTIVE:
            continue
        if cert.device_serial is not None:
            active_devices.add(cert.device_serial)
        if cert.not_after <= now + timedelta(days=options.certificate_days):
            verb = "expired" if cert.not_after <= now else "expires"
            findings.append(
                HygieneFinding(
                    FindingCode.CERTIFICATE_EXPIRING,
                    cert.device_serial or cert.subject,
                    f"certificate {cert.fingerprint[:16]}… {verb} {_day(cert.not_after)}; "
                    "renew it (EST simplereenroll or a new CSR)",
                    cert.fingerprint,
                    cert.not_after,
                )
            )
        violations = client_violations(cert.certificate())
        if violations:
            findings.append(
                HygieneFinding(
                    FindingCode.CERTIFICATE_PROFILE,
                    cert.device_serial or cert.subject,
                    "does not fit the client profile ("
                    + "; ".join(v.code for v in violations)
                    + "); the gateway refuses it: reissue it",
                    cert.fingerprint,
                )
            )

    unseen_before = now - timedelta(days=options.unseen_days)
    devices = {device.serial: device for device in _pages(registry.list_devices)}
    for device in devices.values():
        if device.status != DeviceStatus.ENABLED or device.serial not in active_devices:
            continue
        seen = device.last_seen or device.created_at
        if seen <= unseen_before:
            when = "never connected" if device.last_seen is None else f"last seen {_day(seen)}"
            findings.append(
                HygieneFinding(
                    FindingCode.DEVICE_NOT_SEEN,
                    device.serial,
                    f"{when}, its identity still trusted; disable it if the unit is gone",
                    due=seen,
                )
            )

    skipped: dict[str, str] = {}
    if live is None:
        skipped = {code.value: live_unavailable for code in LIVE_CHECKS}
    else:
        by_fingerprint = {cert.fingerprint: cert for cert in certificates}
        findings.extend(_live_findings(live, by_fingerprint, devices))
    return HygieneReport(now, options, tuple(findings), skipped)


def _live_findings(
    live: LiveView,
    certificates: Mapping[str, CertificateRecord],
    devices: Mapping[str, DeviceRecord],
) -> Sequence[HygieneFinding]:
    found: list[HygieneFinding] = []
    for session in live.sessions:
        cert = certificates.get(session.certificate_fingerprint)
        device = devices.get(session.identity)
        why = None
        if cert is not None and cert.state != CertState.ACTIVE:
            why = f"its certificate is {cert.state.value}"
        elif device is not None and device.status != DeviceStatus.ENABLED:
            why = "the device is disabled"
        if why is not None:
            found.append(
                HygieneFinding(
                    FindingCode.REVOKED_CONNECTED,
                    session.identity,
                    f"connected from {session.peer} although {why}: the change feed has not "
                    "dropped it (check /readyz and the feed's log)",
                    session.certificate_fingerprint,
                )
            )
    for contested in live.contested:
        found.append(
            HygieneFinding(
                FindingCode.CERTIFICATE_USED_TWICE,
                contested.identity,
                "one certificate connected from "
                + ", ".join(contested.addresses)
                + ": two devices share an identity (a cloned key?); revoke it and reissue",
                contested.certificate_fingerprint,
            )
        )
    return found
