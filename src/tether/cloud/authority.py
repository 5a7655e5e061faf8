"""The registry-backed identity authority: the cloud's verdict on every connection.

TLS has already proved that the peer holds the key of a certificate chaining to one of the
CAs this authority handed the TLS layer. What remains is step (5) of the handshake story: does
the certificate fit the profile, is its issuer a registered and active CA that really signed
it, is the certificate known and not revoked (or unknown, under a factory CA that lets new
units register on first contact), and is the device enabled. Only then does the gateway see
an ``Identity``.

Three things are kept in memory because every handshake needs them and none decides a
verdict on its own: the registered CA certificates by key identifier (a certificate never
changes; the CA's *status* is read by the verdict's query every time), the (leaf, CA) pairs
whose signature verified (both fingerprints cover what the check reads), and the "last seen"
times of connected devices, written to the registry in one transaction per ``flush_seen``
(the service flushes every second and at shutdown) instead of one commit per handshake. A
crash can lose at most that second of "last seen" times; it is bookkeeping, not security.

Verdicts run on the authority's own thread pool (``verdict_threads`` threads named
``tether-verdict``), never on the event loop's default executor: the API's work (admin-token
KDFs, provisioning) runs there, and a flood of it must not queue a device's verdict behind it.

Whole allowed verdicts are cached one level up, by the feed's owner (``CloudService`` and
:mod:`tether.cloud.verdict_view`); ``authorize_for_view`` says which verdicts may be.

A service identity (a back-end application) is a certificate from a registered *service* CA;
it is kept in the registry like a device (so it can be disabled and revoked the same way) and
the gateway's policy gives it the service's rights.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from tether.cloud.gateway.identity import (
    HandshakeRefused,
    Identity,
    IdentityKind,
    check_client_profile,
    subject_name,
)
from tether.cloud.registry import (
    CARecord,
    CARole,
    CAStatus,
    CertificateListedOnCRLError,
    Registry,
    SerialBoundError,
    VerdictCode,
)
from tether.errors import StorageError, TetherError
from tether.pki import sha256_fingerprint

CLIENT_ROLES = frozenset({CARole.DEVICE, CARole.FACTORY, CARole.SERVICE})
DEFAULT_VERDICT_THREADS = 4
T = TypeVar("T")
_BOUND_AUDIT_INTERVAL = 60.0  # seconds between audit rows for one (serial, CA) refusal
_BOUND_AUDIT_ENTRIES = 10_000  # remembered pairs before the memory is reset
_VERIFIED_ENTRIES = 100_000  # (leaf, CA) signature checks remembered before a reset

log = logging.getLogger("tether.cloud")


class RegistryAuthority:
    """``IdentityAuthority`` over a ``Registry``; the registry is the single source of truth."""

    def __init__(
        self,
        registry: Registry,
        *,
        actor: str = "gateway",
        verdict_threads: int = DEFAULT_VERDICT_THREADS,
    ) -> None:
        self.registry = registry
        self.actor = actor
        self._verdicts = ThreadPoolExecutor(
            max_workers=verdict_threads, thread_name_prefix="tether-verdict"
        )
        self._lock = threading.Lock()  # handshakes are checked on worker threads
        self._cas: dict[bytes, tuple[CARecord, x509.Certificate, str]] = {}
        self._seen: dict[str, dt.datetime] = {}
        self._bound_audited: dict[tuple[str, str], float] = {}
        self._verified: set[tuple[str, str]] = set()  # (leaf, CA) fingerprints that verified

    def trusted_ca_certificates(self) -> Sequence[x509.Certificate]:
        """The active registered client CAs (device, factory, service): what TLS accepts."""
        return [
            record.certificate()
            for record in self.registry.list_cas(status=CAStatus.ACTIVE)
            if record.role in CLIENT_ROLES
        ]

    async def authorize(self, leaf: x509.Certificate) -> Identity:
        """The verdict for one verified client certificate (on the verdict threads)."""
        return await self.in_verdict_lane(self.authorize_sync, leaf)

    async def in_verdict_lane(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` on the verdict threads, which nothing but verdicts uses."""
        return await asyncio.get_running_loop().run_in_executor(self._verdicts, fn, *args)

    def close(self) -> None:
        """Stop the verdict threads (a verdict still running finishes on its own)."""
        self._verdicts.shutdown(wait=False, cancel_futures=True)

    def authorize_sync(self, leaf: x509.Certificate) -> Identity:
        """``authorize`` for callers without an event loop. Raises ``HandshakeRefused``.

        A registry that cannot be reached refuses the connection (fail closed).
        """
        return self.authorize_at_position(leaf)[1]

    def authorize_at_position(self, leaf: x509.Certificate) -> tuple[int, Identity]:
        """``authorize_sync`` plus the audit position the verdict was read at (one snapshot).

        Every registry change up to that position is reflected in the verdict; a change after
        it may not be, so a caller following the audit log (``CloudService``) re-checks the
        identity against the changes after it. Raises ``HandshakeRefused``.
        """
        position, identity, _ = self.authorize_for_view(leaf)
        return position, identity

    def authorize_for_view(self, leaf: x509.Certificate) -> tuple[int, Identity, bool]:
        """``authorize_at_position`` plus whether the verdict may be cached (``verdict_view``).

        Only a plain allowed verdict (``VerdictCode.OK``) may: never a claim, a just-in-time
        registration or a birth certificate in its enrollment grace. Raises
        ``HandshakeRefused``.
        """
        try:
            return self._authorize(leaf)
        except StorageError as exc:
            raise HandshakeRefused(
                f"The registry is unreachable, so no identity can be checked: {exc.message}",
                code="registry_unavailable",
            ) from exc

    def forget_cas(self) -> None:
        """Drop the CA cache (after a registry change to CAs; the next handshake reloads)."""
        with self._lock:
            self._cas.clear()
            self._verified.clear()

    def flush_seen(self) -> int:
        """Write the buffered "last seen" times in one transaction; returns how many.

        On a registry failure the times are kept for the next flush (newest wins).
        """
        with self._lock:
            seen, self._seen = self._seen, {}
        if not seen:
            return 0
        try:
            return self.registry.touch_devices(seen)
        except StorageError:
            with self._lock:
                for serial, at in seen.items():
                    if serial not in self._seen or self._seen[serial] < at:
                        self._seen[serial] = at
            raise

    def note_seen(self, name: str, at: dt.datetime) -> None:
        """Buffer a "last seen" time (written by ``flush_seen``); for verdicts from the view."""
        with self._lock:
            self._seen[name] = at

    def _authorize(self, leaf: x509.Certificate) -> tuple[int, Identity, bool]:
        now = dt.datetime.now(dt.UTC)
        check_client_profile(leaf, now=now)
        name = subject_name(leaf)
        fingerprint = sha256_fingerprint(leaf)
        ca, _, issuer = self._issuer_of(leaf, fingerprint)
        if ca.role is CARole.SERVER:
            raise HandshakeRefused(
                f"{ca.subject} issues server certificates, not client identities.",
                code="profile_violation",
            )
        verdict = self.registry.check_connection(
            cert_fingerprint=fingerprint, device_serial=name, issuer_fingerprint=ca.fingerprint
        )
        if not verdict.allowed and verdict.reason_code is VerdictCode.DEVICE_UNKNOWN:
            claim = self._claim_identity(name, ca, issuer, fingerprint, now)
            if claim is not None:
                return verdict.audit_position, claim, False
        if (
            not verdict.allowed
            and verdict.reason_code is VerdictCode.SERIAL_BOUND_TO_OTHER_CA
            and self.registry.in_enrollment_grace(fingerprint)
        ):
            # A birth certificate whose device just enrolled: enroll-only until the overlap
            # ends, so a device whose reply was lost can retry (enrollment/service.py).
            grace = Identity(
                kind=IdentityKind.CLAIM,
                name=name,
                certificate_fingerprint=fingerprint,
                issuer=issuer,
                issuer_fingerprint=ca.fingerprint,
            )
            return verdict.audit_position, grace, False
        if not verdict.allowed:
            if verdict.reason_code is VerdictCode.SERIAL_BOUND_TO_OTHER_CA:
                self._audit_bound_refusal(name, ca.fingerprint, fingerprint)
            raise HandshakeRefused(verdict.reason, code=verdict.reason_code.value)
        if verdict.reason_code is VerdictCode.JIT_ALLOWED:
            try:
                self.registry.register_device_just_in_time(
                    leaf, device_serial=name, issuer_fingerprint=ca.fingerprint, actor=self.actor
                )
            except SerialBoundError as exc:  # a concurrent registration bound it first
                self._audit_bound_refusal(name, ca.fingerprint, fingerprint)
                raise HandshakeRefused(exc.message, code=exc.code) from exc
            except CertificateListedOnCRLError as exc:
                raise HandshakeRefused(exc.message, code=exc.code) from exc
        self.note_seen(name, now)
        kind = IdentityKind.SERVICE if ca.role is CARole.SERVICE else IdentityKind.DEVICE
        identity = Identity(
            kind=kind,
            name=name,
            certificate_fingerprint=fingerprint,
            issuer=issuer,
            issuer_fingerprint=ca.fingerprint,
        )
        return verdict.audit_position, identity, verdict.reason_code is VerdictCode.OK

    def _claim_identity(
        self,
        name: str,
        ca: CARecord,
        issuer: str,
        fingerprint: str,
        now: dt.datetime,
    ) -> Identity | None:
        """A claim certificate's identity (it may only enroll), or None if it is not one.

        Asked only when the verdict found an active certificate bound to no device, so a
        normal handshake pays nothing for claims. An expired claim is refused here.
        """
        claim = self.registry.claim_for_certificate(fingerprint)
        if claim is None:
            return None
        if now >= claim.expires_at:
            raise HandshakeRefused(
                f"the claim {claim.name!r} expired at {claim.expires_at:%Y-%m-%d %H:%M:%SZ}; "
                "its certificate no longer connects",
                code="claim_expired",
            )
        return Identity(
            kind=IdentityKind.CLAIM,
            name=name,
            certificate_fingerprint=fingerprint,
            issuer=issuer,
            issuer_fingerprint=ca.fingerprint,
        )

    def _audit_bound_refusal(self, serial: str, issuer: str, fingerprint: str) -> None:
        """Audit a CA trying to vouch for a serial it does not own, at most once a minute each.

        Only a holder of a registered CA's key can get this far, but such a holder can mint
        certificates at will: the in-process bound keeps the audit log from becoming the
        flood. The gateway logs every refusal regardless.
        """
        now = time.monotonic()
        key = (serial, issuer)
        with self._lock:
            if now - self._bound_audited.get(key, -_BOUND_AUDIT_INTERVAL) < _BOUND_AUDIT_INTERVAL:
                return
            if len(self._bound_audited) >= _BOUND_AUDIT_ENTRIES:
                self._bound_audited.clear()
            self._bound_audited[key] = now
        try:
            self.registry.audit(
                actor=self.actor,
                action="connection.refused",
                target=serial,
                details={
                    "code": VerdictCode.SERIAL_BOUND_TO_OTHER_CA.value,
                    "issuer": issuer,
                    "certificate": fingerprint,
                },
            )
        except TetherError as exc:  # auditing a refusal must not turn it into an error
            log.error("cannot audit a refused handshake (%s): %s", exc.code, exc.message)

    def _issuer_of(
        self, leaf: x509.Certificate, fingerprint: str
    ) -> tuple[CARecord, x509.Certificate, str]:
        """The registered CA that signed ``leaf`` (record, certificate, subject DN).

        Found by key identifier (cached) and checked by signature, once per (leaf, CA) pair:
        the leaf's fingerprint covers its signature and the CA's its key, so a pair that
        verified once always verifies (the set is bounded, and emptied with the CA cache).
        """
        try:
            aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        except x509.ExtensionNotFound:
            aki = None
        key_id = aki.key_identifier if aki is not None else None
        with self._lock:
            cached = self._cas.get(key_id) if key_id else None
        if cached is None and key_id:
            record = self.registry.find_ca_by_subject_key_id(key_id)
            if record is not None:
                certificate = record.certificate()
                cached = (record, certificate, certificate.subject.rfc4514_string())
                with self._lock:
                    self._cas[key_id] = cached
        if cached is None:
            raise HandshakeRefused(
                f"No registered CA issued the certificate of {leaf.subject.rfc4514_string()} "
                f"(issuer {leaf.issuer.rfc4514_string()}); register its CA first.",
                code="ca_not_registered",
            )
        ca, certificate, _ = cached
        pair = (fingerprint, ca.fingerprint)
        with self._lock:
            verified = pair in self._verified
        if verified:
            return cached
        try:
            leaf.verify_directly_issued_by(certificate)
        except (InvalidSignature, ValueError, TypeError) as exc:
            raise HandshakeRefused(
                f"The certificate claims {ca.subject} as issuer but its signature does not "
                "verify with that CA's key.",
                code="certificate_signature_invalid",
            ) from exc
        with self._lock:
            if len(self._verified) >= _VERIFIED_ENTRIES:
                self._verified.clear()
            self._verified.add(pair)
        return cached
