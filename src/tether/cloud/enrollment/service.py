"""The one enroll operation: a CSR made in the secure element plus a birth credential in, an
operational certificate chain and an explicit result code out; safe to retry.

Birth credentials (:class:`CredentialKind`), each exchanged only for a certificate of a key the
device made itself (a CSR; the cloud never makes an operational key):

- ``factory``: the factory certificate in the SE, presented over mutual TLS. The serial is
  the certificate's; enrollment moves the serial from the factory CA to the operational CA
  (the one explicit path besides ``move-device``), so the factory certificate stops working
  once the device has enrolled: for the overlap it may still connect *enroll-only* (so a
  device whose reply was lost retries and gets the same certificate), then it is retired and
  refused (``serial_bound_to_other_ca``).
- ``claim``: a claim certificate (shared by a batch, e.g. in firmware) that may do nothing but
  enroll; its policy says which serials or how many, until when. It keeps working for other
  serials until its policy ends (count used up or expiry): that is the claim policy's choice.
- ``token``: a one-time enrollment token for one serial (EST, HTTP Bearer or Basic password).
- ``current``: renewal and rotation, authenticated by the current operational certificate
  (same key: ``renewed``; a new SE key: ``rotated``). A certificate of another CA cannot
  renew into this one (``renewal_wrong_ca``).

Idempotency: a request is keyed by (credential, CSR public key, asked-for serial). The first
one records its result; any retry (after a lost reply) gets the stored certificate back with
the same result code and issues nothing. A spent token or a used-up claim refuses only a
*different* request. Every refusal happens before signing or inside the one registry
transaction, so a refusal issues nothing. The serial prefix ``claim.`` is reserved for claim
certificates.

Over ~400 lines (~490): the one operation with its request classification, serial rules and
hook call, kept together so the order of checks (nothing signed before every refusal) reads in
one place.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from tether.cloud.enrollment.authorize import (
    REFUSED_ACTION,
    EnrollDecider,
    EnrollmentPolicyDeniedError,
    refusal,
)
from tether.cloud.enrollment.hook import HookOutcome, HookRequest, HookRunner
from tether.cloud.gateway.identity import Identity, IdentityKind
from tether.cloud.registry import ConcurrentChangeError, Registry
from tether.cloud.registry.enrollment import (
    ClaimPolicyError,
    ClaimRecord,
    EnrollmentRecord,
    EnrollmentWrite,
)
from tether.errors import PermissionDeniedError, PolicyViolationError, TetherError
from tether.pki import IssuingCA, load_csr, sha256_fingerprint, validate_serial
from tether.pki.authority import check_csr_subject, check_device_csr
from tether.pki.store import pem

CLAIM_PREFIX = "claim."
DEFAULT_VALIDITY = timedelta(days=30)
DEFAULT_OVERLAP = timedelta(days=1)
CLAIM_CACHE_SECONDS = 2.0


class CredentialKind(StrEnum):
    """What a device enrolls (or renews) with."""

    FACTORY = "factory"
    CLAIM = "claim"
    TOKEN = "token"  # noqa: S105 (a kind of credential, not one)
    CURRENT = "current"


class EnrollResult(StrEnum):
    """The explicit result of a successful enroll call (a retry returns the same one)."""

    ENROLLED = "enrolled"
    RENEWED = "renewed"
    ROTATED = "rotated"


class EnrollmentSerialMismatchError(PolicyViolationError):
    """The CSR names another serial than the credential (or the hook) allows."""

    code = "enrollment_serial_mismatch"


class EnrollmentSerialMissingError(PolicyViolationError):
    """No serial: the CSR carries none and neither the credential nor the hook gave one."""

    code = "enrollment_serial_missing"


class EnrollmentNotAllowedError(PermissionDeniedError):
    """This credential may not do this (a claim renewing, a factory certificate renewing)."""

    code = "enrollment_not_allowed"


class RenewalWrongCAError(PermissionDeniedError):
    """Only a certificate of the operational CA renews; another CA's cannot renew into it."""

    code = "renewal_wrong_ca"


@dataclass(frozen=True, slots=True)
class Credential:
    """The birth (or current) credential of one request, as the transport authenticated it."""

    kind: CredentialKind
    identity: Identity | None = None  # factory, claim, current: the verified TLS identity
    claim: ClaimRecord | None = None
    token: str | None = None

    def key(self) -> str:
        """What identifies the credential in the request key (never the token itself)."""
        if self.token is not None:
            return "token:" + token_hash(self.token)
        assert self.identity is not None
        return f"{self.kind.value}:{self.identity.certificate_fingerprint}"


@dataclass(frozen=True, slots=True)
class EnrollOutcome:
    """A successful enroll or renew: the result code, the serial, the chain (leaf first)."""

    result: EnrollResult
    serial: str
    certificate: x509.Certificate
    chain_pem: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    replayed: bool = False

    @property
    def certificate_pem(self) -> str:
        """The operational certificate alone, PEM."""
        return pem(self.certificate).decode("ascii")


def token_hash(token: str) -> str:
    """What the registry keeps of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _public_key_der(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def check_csr(data: bytes) -> x509.CertificateSigningRequest:
    """A readable, self-signed CSR for a P-256 key, or the refusal for each other case.

    Its signature is verified here once per request (``pki.check_device_csr``); the
    certificate is then signed with ``issue_device_certificate_for_key``, which does not
    verify it again.
    """
    csr = load_csr(data)
    check_device_csr(csr)
    return csr


def csr_serial(csr: x509.CertificateSigningRequest) -> str | None:
    """The CN a CSR asks for (None for an empty subject); the CA checks the rest."""
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if len(cns) == 1 else None


class EnrollmentService:
    """Enroll, renew and rotate against one registry with the operational CA's key."""

    def __init__(
        self,
        registry: Registry,
        operational_ca: IssuingCA,
        *,
        validity: timedelta = DEFAULT_VALIDITY,
        overlap: timedelta = DEFAULT_OVERLAP,
        hook: HookRunner | None = None,
        chain_extra: tuple[x509.Certificate, ...] = (),
        actor: str = "enrollment",
        policy: EnrollDecider | None = None,
    ) -> None:
        """``operational_ca`` must be registered and active; ``chain_extra`` follows it in
        every answer's chain (e.g. the root); ``policy`` decides ``enroll`` per identity
        (``authorize.py``; None: no policy check, as for a bare library use)."""
        self.policy = policy
        self.registry = registry
        self.ca = operational_ca
        self.ca_fingerprint = sha256_fingerprint(operational_ca.certificate)
        self.validity = validity
        self.overlap = overlap
        self.hook = hook
        self.actor = actor
        self.ca_certificates = (operational_ca.certificate, *chain_extra)
        self._chain_tail = "".join(pem(c).decode("ascii") for c in self.ca_certificates)
        self._claims: dict[str, tuple[float, ClaimRecord | None]] = {}
        self._claims_lock = threading.Lock()

    # -- classifying what the transport authenticated --------------------------------------

    def credential_for(self, identity: Identity) -> Credential:
        """The credential a verified TLS identity is: claim, current (renewal) or factory."""
        if identity.kind is IdentityKind.CLAIM:
            claim = self._claim(identity.certificate_fingerprint)
            if claim is None:  # a birth certificate in its grace period: a retry
                return Credential(CredentialKind.FACTORY, identity=identity)
            return Credential(CredentialKind.CLAIM, identity=identity, claim=claim)
        if identity.issuer_fingerprint == self.ca_fingerprint:
            return Credential(CredentialKind.CURRENT, identity=identity)
        return Credential(CredentialKind.FACTORY, identity=identity)

    def _claim(self, fingerprint: str) -> ClaimRecord | None:
        """The claim of a certificate, read at most every ``CLAIM_CACHE_SECONDS``.

        A storm reuses one claim certificate for every request; reading its row each time
        was one of the reads per enrollment. The cached record only decides refusals made
        before signing: the write transaction re-reads the claim row under the write lock
        (count, expiry), so a stale cache can cost a signature, never issue past the policy.
        """
        now = time.monotonic()
        cached = self._claims.get(fingerprint)
        if cached is not None and now - cached[0] < CLAIM_CACHE_SECONDS:
            return cached[1]
        claim = self.registry.claim_for_certificate(fingerprint)
        with self._claims_lock:
            if len(self._claims) > 4096:
                self._claims.clear()
            self._claims[fingerprint] = (now, claim)
        return claim

    def forget_claims(self) -> None:
        """Drop cached claim records (after a claim changed in this process)."""
        with self._claims_lock:
            self._claims.clear()

    # -- the operation ---------------------------------------------------------------------

    def enroll(
        self, csr_data: bytes, credential: Credential, *, serial: str | None = None
    ) -> EnrollOutcome:
        """Exchange a birth credential and a CSR for an operational certificate (idempotent).

        Raises a TetherError for each refusal (malformed CSR, a key that is not P-256, a CSR
        for another serial, a replayed token, a claim outside its policy, a hook refusal,
        timeout or failure); a refusal issues nothing.
        """
        if credential.kind is CredentialKind.CURRENT:
            raise EnrollmentNotAllowedError(
                "this device already holds an operational certificate: renew with it "
                "(simplereenroll, $tether/renew) instead of enrolling again"
            )
        csr = check_csr(csr_data)
        asked = serial or csr_serial(csr)
        key = self._request_digest(credential, csr, asked)
        tokened = None if credential.token is None else token_hash(credential.token)
        stored, token_serial = self.registry.enrollment_precheck(key, tokened)
        if stored is not None:
            return self._outcome(stored)
        target = self._serial_for(credential, asked, token_serial)
        hooked = self._run_hook(credential, csr, target)
        attributes: Mapping[str, str] = {}
        groups: tuple[str, ...] = ()
        if hooked is not None:
            attributes, groups = hooked.verdict.attributes, hooked.verdict.groups
            if hooked.verdict.serial is not None:
                if target is not None and hooked.verdict.serial != target:
                    raise EnrollmentSerialMismatchError(
                        f"the hook picked {hooked.verdict.serial!r} but the request is for "
                        f"{target!r}"
                    )
                target = hooked.verdict.serial
        if target is None:
            raise EnrollmentSerialMissingError(
                "no serial for this enrollment: put CN=<serial> in the CSR (or let the "
                "provisioning hook pick one)"
            )
        target = self._check_serial(target, csr)
        if credential.identity is not None:
            self._authorize(credential.identity, target)
        if credential.kind is CredentialKind.CLAIM:
            assert credential.claim is not None
            refusal = credential.claim.refusal(target, self.registry._clock())
            if refusal is not None:
                raise ClaimPolicyError(refusal + "; nothing was issued")
        write = EnrollmentWrite(
            request_digest=key,
            serial=target,
            credential=credential.key(),
            result=EnrollResult.ENROLLED.value,
            certificate=self._sign(csr, target),
            operational_ca=self.ca_fingerprint,
            actor=self.actor,
            overlap=self.overlap,  # the birth certificate's grace period for a retry
            previous_owner=(
                credential.identity.issuer_fingerprint
                if credential.kind is CredentialKind.FACTORY and credential.identity
                else None
            ),
            may_reenroll=credential.kind is CredentialKind.TOKEN,
            predecessor=(
                credential.identity.certificate_fingerprint
                if credential.kind is CredentialKind.FACTORY and credential.identity
                else None
            ),
            claim=credential.claim.name if credential.claim is not None else None,
            token_hash=None if credential.token is None else token_hash(credential.token),
            attributes=attributes,
            groups=groups,
        )
        return self._record(write)

    def renew(self, csr_data: bytes, identity: Identity) -> EnrollOutcome:
        """Renew (same key) or rotate (new key) with the current operational certificate.

        The device keeps its serial, history and policy; the old certificate stays valid for
        ``overlap`` and is then retired (:meth:`retire_due`). Raises RenewalWrongCAError for
        a certificate of another CA and EnrollmentNotAllowedError for a claim.
        """
        if identity.kind is not IdentityKind.DEVICE:
            raise EnrollmentNotAllowedError(
                f"a {identity.kind.value} certificate cannot renew; only a device's "
                "operational certificate does"
            )
        if identity.issuer_fingerprint != self.ca_fingerprint:
            raise RenewalWrongCAError(
                f"the certificate of {identity.name!r} was issued by another CA; only a "
                "certificate of the operational CA renews (enroll with the birth credential)"
            )
        csr = check_csr(csr_data)
        credential = Credential(CredentialKind.CURRENT, identity=identity)
        key = self._request_digest(credential, csr, identity.name)
        stored, _ = self.registry.enrollment_precheck(key, None)
        if stored is not None:
            return self._outcome(stored)
        serial = self._check_serial(identity.name, csr)
        self._authorize(identity, serial)
        current = self.registry.get_certificate(identity.certificate_fingerprint)
        same_key = _public_key_der(csr) == current.certificate().public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
        result = EnrollResult.RENEWED if same_key else EnrollResult.ROTATED
        write = EnrollmentWrite(
            request_digest=key,
            serial=serial,
            credential=credential.key(),
            result=result.value,
            certificate=self._sign(csr, serial),
            operational_ca=self.ca_fingerprint,
            actor=self.actor,
            overlap=self.overlap,
            may_reenroll=True,
            predecessor=identity.certificate_fingerprint,
        )
        return self._record(write)

    def retire_due(self) -> list[str]:
        """Retire the certificates whose overlap has ended (see Registry.retire_due)."""
        return self.registry.retire_due(actor=self.actor)

    # -- internals -------------------------------------------------------------------------

    def _request_digest(
        self, credential: Credential, csr: x509.CertificateSigningRequest, serial: str | None
    ) -> str:
        digest = hashlib.sha256()
        for part in (credential.key().encode(), _public_key_der(csr), (serial or "").encode()):
            digest.update(len(part).to_bytes(4, "big") + part)
        return digest.hexdigest()

    def _sign(self, csr: x509.CertificateSigningRequest, serial: str) -> x509.Certificate:
        """Sign for the CSR's key (already verified by ``check_csr``; subject by
        ``_check_serial``): the library's checks, each once."""
        return self.ca.issue_device_certificate_for_key(
            csr.public_key(),  # type: ignore[arg-type] (check_csr: P-256)
            serial,
            validity=self.validity,
        )

    def _serial_for(
        self, credential: Credential, asked: str | None, token_serial: str | None
    ) -> str | None:
        """The serial the credential itself fixes, checked against what the request asks."""
        fixed: str | None = None
        if credential.kind is CredentialKind.FACTORY:
            assert credential.identity is not None
            fixed = credential.identity.name
        elif credential.kind is CredentialKind.TOKEN:
            fixed = token_serial
        if fixed is not None and asked is not None and asked != fixed:
            raise EnrollmentSerialMismatchError(
                f"the request is for the serial {asked!r} but the credential is for {fixed!r}; "
                "a device enrolls only as itself"
            )
        return fixed or asked

    def _check_serial(self, serial: str, csr: x509.CertificateSigningRequest) -> str:
        serial = validate_serial(serial)
        if serial.startswith(CLAIM_PREFIX):
            raise EnrollmentSerialMismatchError(
                f"serials starting with {CLAIM_PREFIX!r} are reserved for claim certificates"
            )
        asked = csr_serial(csr)
        if asked is not None and asked != serial:
            raise EnrollmentSerialMismatchError(
                f"the CSR asks for the serial {asked!r}, but this enrollment is for {serial!r}"
            )
        check_csr_subject(csr, serial)  # no other subject attribute
        return serial

    def _authorize(self, identity: Identity, serial: str) -> None:
        """EnrollmentPolicyDeniedError (audited) unless the policy allows this enroll."""
        denied = refusal(self.policy, identity, serial)
        if denied is None:
            return
        self.registry.audit(
            actor=self.actor,
            action=REFUSED_ACTION,
            target=serial,
            details={
                "code": EnrollmentPolicyDeniedError.code,
                "identity": identity.name[:200],
                "kind": identity.kind.value,
                "policy": denied.policy,
                "statement": denied.statement,
            },
        )
        raise EnrollmentPolicyDeniedError(
            f"{identity.kind.value} {identity.name!r} may not enroll {serial!r}: "
            f"{denied.explain()}; nothing was issued"
        )

    def _run_hook(
        self, credential: Credential, csr: x509.CertificateSigningRequest, serial: str | None
    ) -> HookOutcome | None:
        if self.hook is None:
            return None
        request = HookRequest(
            serial=serial,
            credential=credential.kind.value,
            claim=None if credential.claim is None else credential.claim.name,
            birth_certificate=(
                None if credential.identity is None else credential.identity.certificate_fingerprint
            ),
            public_key_sha256=hashlib.sha256(_public_key_der(csr)).hexdigest(),
        )
        target = serial or (credential.claim.name if credential.claim else "unknown")
        try:
            outcome = self.hook.run(request)
        except TetherError as exc:
            self._audit_hook(target, exc.code, getattr(exc, "latency_ms", -1))
            raise
        self._audit_hook(target, "allowed", outcome.latency_ms)
        return outcome

    def _audit_hook(self, target: str, verdict: str, latency_ms: int) -> None:
        self.registry.audit(
            actor=self.actor,
            action="enrollment.hook",
            target=target[:200],
            details={"verdict": verdict, "latency_ms": latency_ms},
        )

    def _record(self, write: EnrollmentWrite) -> EnrollOutcome:
        try:
            record = self.registry.record_enrollment(write)
        except ConcurrentChangeError:
            # The same request committed first on another thread: hand back its result.
            stored, _ = self.registry.enrollment_precheck(write.request_digest, None)
            if stored is None:
                raise
            record = stored
        return self._outcome(record)

    def _outcome(self, record: EnrollmentRecord) -> EnrollOutcome:
        certificate = x509.load_pem_x509_certificate(record.certificate_pem.encode("ascii"))
        return EnrollOutcome(
            result=EnrollResult(record.result),
            serial=record.serial,
            certificate=certificate,
            chain_pem=record.certificate_pem + self._chain_tail,
            attributes=record.attributes,
            replayed=record.replayed,
        )
