"""The verdict view: allowed registry verdicts kept in memory, current by the change feed.

A handshake's registry verdict (``RegistryAuthority``) is one SQL statement plus a signature
re-check of the leaf: about a quarter of a connect's CPU (issue 15's profile). Most connects are
a known device coming back, whose verdict has not changed since the last time. The view keeps
the *allowed* verdicts (``VerdictCode.OK``: a registered, active certificate bound to an
enabled device under an active CA) by certificate fingerprint, with the audit position they
were read at, and the feed (:meth:`CloudService.dispatch`) drops every entry an audit entry may
change before anything else acts on it:

- a certificate's revocation, state change or (re)registration drops that fingerprint;
- anything about a device (status, rebinding to another CA, registration, enrollment) drops
  every certificate of that serial;
- anything about a CA, and every action this module does not know, drops everything (fail
  safe: a new kind of change can only cost cache hits, never let a refused device in);
- actions known not to touch a verdict (policies, groups and attributes, admins, refusals,
  the gateway's own certificate) keep the view: the policy is checked separately.

What is never cached: refusals, claims (enroll-only identities), just-in-time registrations and
the enrollment grace of a birth certificate; they all take the registry path every time.

When the view is used (see ``CloudService.authorize``): only while the feed is current (it is
emptied the moment the feed stops being current, fail closed stays), and an entry is stored only
if its verdict was read at or after the feed's position, so no applied change can be missing
from it. A hit answers only while the audit log's newest id is one the feed has applied
(``CloudService._still_current``): a change committed but not yet read by this worker's feed
(its NOTIFY or file event still on the way) sends the handshake to the registry, so a
revocation refuses the very next handshake, as without the view. The certificate's validity
period is checked on every hit (it is the one part of a verdict that changes with time alone).

All methods run on the event loop (the feed and ``CloudService.authorize`` both do); nothing
here is thread-safe, and nothing needs to be.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from tether.cloud.gateway.identity import Identity
from tether.cloud.registry import AuditAction, AuditEntry
from tether.cloud.rotation import SERVER_CERTIFICATE_ROTATED

DEFAULT_CAPACITY = 100_000  # entries; the oldest is evicted first (~300 bytes each)

# Audit actions that cannot change an allowed verdict (the view keeps every entry).
KEEPS_VERDICTS = frozenset(
    {
        AuditAction.ADMIN_ADD.value,
        AuditAction.ADMIN_ROTATE.value,
        AuditAction.ADMIN_REVOKE.value,
        AuditAction.POLICY_PUT.value,
        AuditAction.POLICY_DELETE.value,
        AuditAction.POLICY_ATTACH.value,
        AuditAction.POLICY_DETACH.value,
        AuditAction.DEVICE_GROUP_ADD.value,
        AuditAction.DEVICE_GROUP_REMOVE.value,
        AuditAction.DEVICE_ATTRIBUTE.value,
        "connection.refused",
        SERVER_CERTIFICATE_ROTATED,
    }
)
# Audit actions whose target is a certificate fingerprint (dropped by fingerprint).
BY_CERTIFICATE = frozenset(
    {
        AuditAction.CERTIFICATE_ADD.value,
        AuditAction.CERTIFICATE_STATE.value,
        AuditAction.CERTIFICATE_REVOKE.value,
    }
)
# Prefixes of audit actions whose target is a device serial (dropped by serial).
BY_DEVICE_PREFIXES = ("device.", "enrollment.")


@dataclass(frozen=True, slots=True)
class Cached:
    """One allowed verdict: the identity, the audit position it was read at, its validity."""

    identity: Identity
    position: int
    not_before: dt.datetime
    not_after: dt.datetime


class VerdictView:
    """Allowed verdicts by certificate fingerprint; see the module docstring for the rules."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity  # 0: the view is off (every handshake asks the registry)
        self._entries: dict[str, Cached] = {}
        self._by_serial: dict[str, tuple[str, ...]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, fingerprint: str, now: dt.datetime) -> Cached | None:
        """The cached allowed verdict for ``fingerprint``, or None (ask the registry).

        An entry outside its certificate's validity period is dropped here: the registry path
        then gives the refusal with its own code (``certificate_expired``...).
        """
        cached = self._entries.get(fingerprint)
        if cached is None:
            self.misses += 1
            return None
        if not cached.not_before <= now <= cached.not_after:
            self._drop(fingerprint)
            self.misses += 1
            return None
        self.hits += 1
        return cached

    def holds(self, fingerprint: str, cached: Cached) -> bool:
        """Whether ``cached`` is still the entry for ``fingerprint`` (the feed did not drop it)."""
        return self._entries.get(fingerprint) is cached

    def put(self, cached: Cached) -> None:
        """Remember an allowed verdict (the caller checked it may: see the module docstring)."""
        if self.capacity <= 0:
            return
        fingerprint = cached.identity.certificate_fingerprint
        if fingerprint not in self._entries:
            while len(self._entries) >= self.capacity:
                self._drop(next(iter(self._entries)))
            serial = cached.identity.name
            self._by_serial[serial] = (*self._by_serial.get(serial, ()), fingerprint)
        self._entries[fingerprint] = cached

    def apply(self, entry: AuditEntry) -> None:
        """Drop every verdict ``entry`` may change (called by the feed before it acts)."""
        action = entry.action
        if action in KEEPS_VERDICTS or not self._entries:
            return
        if action in BY_CERTIFICATE:
            self._drop(entry.target)
            device = entry.details.get("device")
            if isinstance(device, str):
                self.drop_serial(device)
        elif action.startswith(BY_DEVICE_PREFIXES):
            self.drop_serial(entry.target)
        else:  # a CA change, or an action this module does not know: fail safe
            self.clear()

    def drop_serial(self, serial: str) -> None:
        """Drop the verdicts of every certificate of the device (or service) ``serial``."""
        for fingerprint in self._by_serial.pop(serial, ()):
            self._entries.pop(fingerprint, None)

    def clear(self) -> None:
        """Drop everything (the feed is not current, or a change touched every verdict)."""
        self._entries.clear()
        self._by_serial.clear()

    def _drop(self, fingerprint: str) -> None:
        cached = self._entries.pop(fingerprint, None)
        if cached is None:
            return
        serial = cached.identity.name
        rest = tuple(f for f in self._by_serial.get(serial, ()) if f != fingerprint)
        if rest:
            self._by_serial[serial] = rest
        else:
            self._by_serial.pop(serial, None)
