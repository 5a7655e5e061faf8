"""Enrollment's part of ``cloud.json`` (``"enrollment": {...}``); off unless enabled.

Decision: the operational CA's key is loaded in the gateway process when enrollment is on
(``operational_ca``, default ``api.device_ca``; the same passphrase as the API's), because
MQTT enrollment is answered on the gateway's sessions. The console and CSR paths keep their
key in the API process. Forwarding CSRs to a signing process of its own would keep the key out
of the gateway entirely; it is the next step, not done yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class EnrollmentOptions:
    """Enrollment settings: EST listener, certificate lifetime and overlap, the hook."""

    enabled: bool = False
    operational_ca: str | None = None  # CA directory; None: api.device_ca
    est_host: str = "127.0.0.1"
    est_port: int = 8444  # 0: any free port; the EST listener is off with est_enabled false
    est_enabled: bool = True
    validity_days: float = 30.0  # short-lived operational certificates: renewal is automatic
    overlap_hours: float = 24.0  # the old certificate stays valid this long after a renewal
    hook: str | None = None  # "package.module:function", called in process
    hook_url: str | None = None  # or an HTTP(S) endpoint
    hook_deadline: float = 5.0  # seconds; a late hook is a refusal (hook_timeout)

    @property
    def validity(self) -> timedelta:
        return timedelta(days=self.validity_days)

    @property
    def overlap(self) -> timedelta:
        return timedelta(hours=self.overlap_hours)
