"""What state a device is really in: the one place the console and the CLI derive it from.

A device's ``status`` column says only whether an admin enabled it; a device whose every
certificate is revoked, inactive, expired, or under a CA that is no longer active cannot
connect, and must not show as a green "enabled". :func:`derive_state` combines the device
record, its certificates and the CAs' statuses into a :class:`DeviceState` with one label:

- ``disabled``: an admin disabled it (whatever its certificates);
- ``no valid certificate``: enabled, but no certificate the gateway would accept now;
- ``enabled``: enabled with at least one usable certificate.

"Usable" repeats what the gateway checks from the registry (certificate ``active``, inside its
validity window, its issuer CA ``active``); the gateway remains the authority, this is a view.
Whether the device is connected now only the gateway knows: it comes from its ``/sessions``
live view (:mod:`tether.cloud.observability.live`) when that is reachable, and is ``None``
("unknown") when it is not, never guessed from ``last_seen``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from tether.cloud.hygiene import LiveView
from tether.cloud.registry import (
    CAStatus,
    CertificateRecord,
    CertState,
    DeviceRecord,
    DeviceStatus,
    Registry,
)
from tether.errors import TetherError

NO_VALID_CERTIFICATE = "no valid certificate"
_MAX_CERTIFICATES = 1000  # a registry page: more certificates than that per device is abuse


@dataclass(frozen=True)
class DeviceState:
    """A device's honest state: admin status, usable certificates, connected (None: unknown)."""

    serial: str
    status: DeviceStatus
    usable_certificates: int
    connected: bool | None

    @property
    def healthy(self) -> bool:
        """Enabled and holding a certificate the gateway would accept now."""
        return self.status is DeviceStatus.ENABLED and self.usable_certificates > 0

    @property
    def label(self) -> str:
        """``enabled``, ``disabled`` or ``no valid certificate`` (see the module docstring)."""
        if self.status is DeviceStatus.DISABLED:
            return DeviceStatus.DISABLED.value
        return DeviceStatus.ENABLED.value if self.usable_certificates else NO_VALID_CERTIFICATE

    @property
    def css(self) -> str:
        """The console's class for the label: green only when healthy."""
        return "status-enabled" if self.healthy else "status-disabled"

    @property
    def connection(self) -> str:
        """``connected``, ``not connected`` or ``unknown`` (the gateway's view unreachable)."""
        if self.connected is None:
            return "unknown"
        return "connected" if self.connected else "not connected"


def usable(cert: CertificateRecord, cas: Mapping[str, CAStatus], now: datetime) -> bool:
    """Would the gateway accept this certificate now, as far as the registry says?"""
    return (
        cert.state is CertState.ACTIVE
        and cert.not_before <= now < cert.not_after
        and cas.get(cert.issuer_fingerprint) is CAStatus.ACTIVE
    )


def derive_state(
    device: DeviceRecord,
    certificates: Iterable[CertificateRecord],
    cas: Mapping[str, CAStatus],
    connected: frozenset[str] | None,
    now: datetime | None = None,
) -> DeviceState:
    """The state of ``device`` from its certificates, the CA statuses and who is connected."""
    now = now or datetime.now(UTC)
    count = sum(1 for cert in certificates if usable(cert, cas, now))
    live = None if connected is None else device.serial in connected
    return DeviceState(device.serial, DeviceStatus(device.status), count, live)


def connected_serials(live_view: Callable[[], LiveView] | None) -> frozenset[str] | None:
    """The identities connected now, or ``None`` when the gateway's view is unavailable."""
    if live_view is None:
        return None
    try:
        view = live_view()
    except TetherError:  # LiveViewUnavailable: shown as "unknown", never as "not connected"
        return None
    return frozenset(session.identity for session in view.sessions)


def device_states(
    registry: Registry,
    devices: Iterable[DeviceRecord],
    *,
    live_view: Callable[[], LiveView] | None = None,
    certificates: Mapping[str, Iterable[CertificateRecord]] | None = None,
) -> dict[str, DeviceState]:
    """States of ``devices`` (a page of them) by serial; one certificate read per device.

    ``certificates`` may supply what the caller already read (a detail page), by serial.
    """
    cas = {ca.fingerprint: CAStatus(ca.status) for ca in registry.list_cas()}
    connected = connected_serials(live_view)
    now = datetime.now(UTC)
    states: dict[str, DeviceState] = {}
    for device in devices:
        known = None if certificates is None else certificates.get(device.serial)
        if known is None:
            known = registry.list_certificates(
                device_serial=device.serial, limit=_MAX_CERTIFICATES
            ).items
        states[device.serial] = derive_state(device, known, cas, connected, now)
    return states
