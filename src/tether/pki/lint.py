"""Check any certificate (or chain) against the Tether profile, Matter DAC/PAI/PAA style.

``lint`` never raises on a certificate it managed to load: a certificate Tether did not issue
(RSA, another curve, missing extensions) produces findings, not an exception. Each finding
has a severity (``error`` breaks the profile, ``warning`` is allowed but suspicious, ``info``
is context such as "signature not checked"), a stable ``code`` and the subject it is about.

Kinds are recognised from the certificate itself: a CA that signed itself is a root, another
CA is an issuing CA, an end entity with EKU serverAuth is a server certificate and any other
end entity a client (device or service) certificate, whose subject must be exactly one CN
matching the serial pattern.

Why one module of ~500 lines: ``_Linter`` is one walk over one certificate that appends to
one findings list, and each check reads what the earlier ones established (kind, issuer,
extensions). The rules themselves are the profile's (``tether.pki.names``, the role EKUs); a
split by check would scatter one certificate's walk over files without a seam to cut along.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, SignatureAlgorithmOID

from tether.errors import TetherError
from tether.pki.loading import PARSE_ERRORS, sha256_fingerprint
from tether.pki.names import ROLE_PURPOSE, SERIAL_PATTERN, Role, role_of

Severity = Literal["error", "warning", "info"]
_T = TypeVar("_T", bound=x509.ExtensionType)
_MAX_SERIAL_BITS = 159  # a positive INTEGER in at most 20 octets keeps its top bit clear


@dataclass(frozen=True)
class Finding:
    """One lint result about the certificate named by ``subject``."""

    severity: Severity
    code: str
    message: str
    subject: str

    def as_dict(self) -> dict[str, str]:
        """The finding as a JSON-ready dict."""
        return asdict(self)


def _subject_text(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string() or "(empty subject)"
    except ValueError:
        return "(unreadable subject)"


def _same_name(a: x509.Certificate, b: x509.Certificate) -> bool:
    try:
        return a.issuer == b.subject
    except ValueError:
        return False


def _ext(exts: x509.Extensions | None, kind: type[_T]) -> x509.Extension[_T] | None:
    if exts is None:
        return None
    try:
        return exts.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = _ext(cert.extensions, x509.BasicConstraints)
    except PARSE_ERRORS:
        return False
    return bc is not None and bc.value.ca


def _signature_ok(cert: x509.Certificate, issuer: x509.Certificate) -> str | None:
    """None if ``issuer`` signed ``cert``, else the reason."""
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature:
        return "the signature does not verify with the issuer's key"
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        return f"the signature cannot be checked: {exc}"
    return None


class _Linter:
    def __init__(self, cert: x509.Certificate, pool: Sequence[x509.Certificate]) -> None:
        self.cert = cert
        self.pool = pool
        self.subject = _subject_text(cert)
        self.findings: list[Finding] = []
        self.now = datetime.now(UTC)

    def add(self, severity: Severity, code: str, message: str) -> None:
        self.findings.append(Finding(severity, code, message, self.subject))

    def run(self, *, primary: bool, kind: str | None = None) -> list[Finding]:
        cert = self.cert
        self_issued = _same_name(cert, cert)
        try:
            exts: x509.Extensions | None = cert.extensions
        except PARSE_ERRORS as exc:
            exts = None
            self.add("error", "extensions.unreadable", f"the extensions cannot be parsed: {exc}")
        bc = _ext(exts, x509.BasicConstraints)
        is_ca = bc is not None and bc.value.ca
        eku = _ext(exts, x509.ExtendedKeyUsage)
        eku_oids = list(eku.value) if eku is not None else []
        kind = kind or (
            ("root" if self_issued else "issuing")
            if is_ca
            else ("server" if ExtendedKeyUsageOID.SERVER_AUTH in eku_oids else "client")
        )
        issuer = self._issuer(self_issued, primary)
        self._basics()
        self._key()
        self._validity(issuer if not self_issued else None)
        if exts is not None:
            self._extensions(exts, kind, issuer)
        self._subject(kind, exts)
        if issuer is not None and not self_issued:
            self._issuer_rules(kind, issuer)
        return self.findings

    def _issuer(self, self_issued: bool, primary: bool) -> x509.Certificate | None:
        cert = self.cert
        if self_issued:
            reason = _signature_ok(cert, cert)
            if reason is not None:
                self.add("error", "signature.invalid", f"self-signed certificate: {reason}")
            return cert
        candidates = [c for c in self.pool if c is not cert and _same_name(cert, c)]
        for candidate in candidates:
            if _signature_ok(cert, candidate) is None:
                return candidate
        if candidates:
            reason = _signature_ok(cert, candidates[0])
            self.add("error", "signature.invalid", f"{reason} ({_subject_text(candidates[0])})")
            return candidates[0]
        if primary and len(self.pool) > 1:
            self.add(
                "error",
                "chain.issuer_missing",
                "no certificate in the chain has this certificate's issuer name as its subject",
            )
        else:
            self.add(
                "info",
                "chain.issuer_unknown",
                "the issuer is not among the given certificates; signature and nesting not "
                "checked (pass it with --chain)",
            )
        return None

    def _basics(self) -> None:
        cert = self.cert
        if cert.version != x509.Version.v3:
            self.add("error", "version", f"version is {cert.version.name}; v3 is required")
        serial = cert.serial_number
        if serial <= 0:
            self.add("error", "serial.not_positive", "the serial number must be positive")
        elif serial.bit_length() > _MAX_SERIAL_BITS:
            self.add("error", "serial.too_long", "the serial number is longer than 20 octets")
        if cert.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
            name = getattr(cert.signature_algorithm_oid, "_name", "unknown")
            self.add(
                "error",
                "signature.algorithm",
                f"signed with {name} ({cert.signature_algorithm_oid.dotted_string}); "
                "ecdsa-with-SHA256 is required",
            )

    def _key(self) -> None:
        try:
            key = self.cert.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            self.add("error", "key.unreadable", f"the public key cannot be read: {exc}")
            return
        if not isinstance(key, ec.EllipticCurvePublicKey):
            kind = type(key).__name__.removeprefix("_")
            self.add("error", "key.type", f"the key is {kind}; ECDSA P-256 is required")
        elif not isinstance(key.curve, ec.SECP256R1):
            self.add("error", "key.curve", f"the key is on {key.curve.name}; P-256 is required")

    def _validity(self, issuer: x509.Certificate | None) -> None:
        start, end = self.cert.not_valid_before_utc, self.cert.not_valid_after_utc
        if start >= end:
            self.add("error", "validity.order", "notBefore is not before notAfter")
        if end < self.now:
            self.add("warning", "validity.expired", f"expired on {end.isoformat()}")
        if start > self.now:
            self.add("warning", "validity.not_yet_valid", f"valid only from {start.isoformat()}")
        if issuer is not None and (
            start < issuer.not_valid_before_utc or end > issuer.not_valid_after_utc
        ):
            self.add(
                "error",
                "validity.outside_issuer",
                "the validity period is not inside the issuer's "
                f"({issuer.not_valid_before_utc.date()} .. {issuer.not_valid_after_utc.date()})",
            )

    def _extensions(
        self, exts: x509.Extensions, kind: str, issuer: x509.Certificate | None
    ) -> None:
        for ext in exts:
            if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
                self.add(
                    "error",
                    "extensions.unknown_critical",
                    f"unknown critical extension {ext.oid.dotted_string}",
                )
        self._basic_constraints(exts, kind)
        self._key_usage(exts, kind)
        self._eku(exts, kind)
        self._key_ids(exts, kind, issuer)

    def _basic_constraints(self, exts: x509.Extensions, kind: str) -> None:
        bc = _ext(exts, x509.BasicConstraints)
        if bc is None:
            self.add("error", "basic_constraints.missing", "basicConstraints is missing")
            return
        if not bc.critical:
            self.add("error", "basic_constraints.not_critical", "basicConstraints is not critical")
        if kind in ("client", "server") and bc.value.ca:
            self.add("error", "basic_constraints.leaf_is_ca", "an end entity must have CA:FALSE")
        if kind == "issuing" and bc.value.path_length != 0:
            self.add(
                "error",
                "basic_constraints.path_len",
                f"an issuing CA must have pathLenConstraint 0 (has {bc.value.path_length})",
            )

    def _key_usage(self, exts: x509.Extensions, kind: str) -> None:
        ku = _ext(exts, x509.KeyUsage)
        if ku is None:
            self.add("error", "key_usage.missing", "keyUsage is missing")
            return
        if not ku.critical:
            self.add("error", "key_usage.not_critical", "keyUsage is not critical")
        usage = ku.value
        extra = [
            name
            for name in (
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
            )
            if getattr(usage, name)
        ]
        if kind in ("root", "issuing"):
            if not (usage.key_cert_sign and usage.crl_sign):
                self.add("error", "key_usage.ca_bits", "a CA needs keyCertSign and cRLSign")
        else:
            if not usage.digital_signature:
                self.add("error", "key_usage.leaf_bits", "an end entity needs digitalSignature")
            if usage.key_cert_sign or usage.crl_sign:
                self.add(
                    "error",
                    "key_usage.leaf_ca_bits",
                    "an end entity must not have keyCertSign or cRLSign",
                )
        if extra:
            self.add("warning", "key_usage.extra_bits", f"unexpected bits: {', '.join(extra)}")

    def _eku(self, exts: x509.Extensions, kind: str) -> None:
        eku = _ext(exts, x509.ExtendedKeyUsage)
        oids = list(eku.value) if eku is not None else []
        if kind == "root":
            if eku is not None:
                self.add("warning", "eku.on_ca", "a Tether root carries no extendedKeyUsage")
            return
        if kind == "issuing":
            self._issuing_eku(oids if eku is not None else None)
            return
        if eku is None:
            self.add("error", "eku.missing", "extendedKeyUsage is missing")
            return
        if ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in oids:
            self.add("error", "eku.any", "anyExtendedKeyUsage is not allowed")
        wanted = (
            ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        )
        if wanted not in oids:
            purpose = "serverAuth" if kind == "server" else "clientAuth"
            self.add("error", "eku.purpose", f"extendedKeyUsage lacks {purpose}")
        others = [o for o in oids if o != wanted]
        if others:
            names = ", ".join(getattr(o, "_name", o.dotted_string) for o in others)
            self.add("warning", "eku.extra", f"unexpected purposes: {names}")

    def _issuing_eku(self, oids: list[x509.ObjectIdentifier] | None) -> None:
        """An issuing CA vouches for the one purpose of its role (``names.ROLE_PURPOSE``)."""
        try:
            role: Role | None = role_of(self.cert)
        except TetherError:
            role = None
        if oids is None:
            self.add(
                "warning",
                "eku.ca_missing",
                "this issuing CA carries no extendedKeyUsage, so standard clients let it vouch "
                "for any purpose (a client CA could mint a server certificate); stand up a new "
                "issuing CA with `tether ca issue-intermediate` and move devices to it "
                "(README, The trust chain: blast radius)",
            )
            return
        if ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in oids:
            self.add("error", "eku.any", "anyExtendedKeyUsage is not allowed on an issuing CA")
        if role is not None and oids != [ROLE_PURPOSE[role]]:
            wanted = ROLE_PURPOSE[role]._name
            self.add(
                "error",
                "eku.ca_role",
                f"a {role.value} issuing CA must carry exactly extendedKeyUsage {wanted}",
            )

    def _key_ids(self, exts: x509.Extensions, kind: str, issuer: x509.Certificate | None) -> None:
        ski = _ext(exts, x509.SubjectKeyIdentifier)
        if ski is None:
            self.add("error", "ski.missing", "subjectKeyIdentifier is missing")
        else:
            try:
                expected = x509.SubjectKeyIdentifier.from_public_key(self.cert.public_key())  # type: ignore[arg-type]
                if expected.digest != ski.value.digest:
                    self.add(
                        "warning",
                        "ski.method",
                        "subjectKeyIdentifier is not the SHA-1 of the key (RFC 5280 method 1)",
                    )
            except (ValueError, TypeError, UnsupportedAlgorithm):
                pass
        aki = _ext(exts, x509.AuthorityKeyIdentifier)
        if aki is None or aki.value.key_identifier is None:
            severity: Severity = "warning" if kind == "root" else "error"
            self.add(severity, "aki.missing", "authorityKeyIdentifier (keyIdentifier) is missing")
            return
        if issuer is None:
            return
        try:
            issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except (x509.ExtensionNotFound, ValueError):
            return
        if issuer_ski.value.digest != aki.value.key_identifier:
            self.add(
                "error",
                "aki.mismatch",
                "authorityKeyIdentifier does not match the issuer's subjectKeyIdentifier",
            )

    def _subject(self, kind: str, exts: x509.Extensions | None) -> None:
        attrs = list(self.cert.subject)
        if kind in ("root", "issuing"):
            if not self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
                self.add("error", "subject.ca_no_cn", "a CA subject needs a CN")
            if kind == "issuing":
                try:
                    role_of(self.cert)
                except TetherError as exc:
                    self.add("warning", "subject.no_role", exc.message)
            return
        if kind == "server":
            san = _ext(exts, x509.SubjectAlternativeName)
            names = (
                san.value.get_values_for_type(x509.DNSName)
                + [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)]
                if san is not None
                else []
            )
            if not names:
                self.add("error", "san.missing", "a server certificate needs DNS or IP SANs")
            single = [n for n in names if "." not in n and ":" not in n]
            if single:
                self.add(
                    "warning",
                    "san.single_label",
                    f"single-label DNS names ({', '.join(single)}) are fine for development but "
                    "not valid host names for RFC 5280 linters; use a fully qualified name",
                )
            return
        if _ext(exts, x509.SubjectAlternativeName) is not None:
            self.add(
                "error",
                "san.on_client",
                "a client certificate carries no subjectAltName: its identity is the subject "
                "CN alone (no e-mail address, no second name to keep consistent)",
            )
        if len(attrs) != 1 or attrs[0].oid != NameOID.COMMON_NAME:
            self.add(
                "error",
                "subject.not_cn_only",
                "a client certificate subject must be exactly one CN (the device serial or "
                "service name); no other attribute, no personal data",
            )
        elif SERIAL_PATTERN.fullmatch(str(attrs[0].value)) is None:
            self.add(
                "error",
                "subject.bad_serial",
                f"CN {attrs[0].value!r} is not a valid serial ([A-Za-z0-9][A-Za-z0-9._-]{{0,63}})",
            )

    def _issuer_rules(self, kind: str, issuer: x509.Certificate) -> None:
        if not _is_ca(issuer):
            self.add("error", "chain.issuer_not_ca", "the issuer is not a CA certificate")
            return
        issuer_bc = _ext(issuer.extensions, x509.BasicConstraints)
        if (
            kind in ("root", "issuing")
            and issuer_bc is not None
            and issuer_bc.value.path_length == 0
        ):
            self.add(
                "error",
                "chain.path_len_exceeded",
                "the issuer has pathLen 0 and cannot sign CA certificates",
            )
        if kind in ("root", "issuing") or _same_name(issuer, issuer):
            if kind not in ("root", "issuing") and _same_name(issuer, issuer):
                self.add("warning", "chain.leaf_from_root", "a leaf signed directly by a root")
            return
        self._issuer_purpose(kind, issuer)
        try:
            role = role_of(issuer)
        except TetherError:
            return
        allowed = {
            "server": (Role.SERVER,),
            "client": (Role.DEVICE, Role.FACTORY, Role.SERVICE),
        }[kind]
        if role not in allowed:
            self.add(
                "error",
                "chain.role",
                f"a {kind} certificate was issued by a {role.value} issuing CA",
            )

    def _issuer_purpose(self, kind: str, issuer: x509.Certificate) -> None:
        """A leaf's purpose must be one its issuing CA vouches for (when the CA says)."""
        issuer_eku = _ext(issuer.extensions, x509.ExtendedKeyUsage)
        if issuer_eku is None:
            return
        wanted = (
            ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        )
        if wanted not in list(issuer_eku.value):
            self.add(
                "error",
                "chain.eku",
                f"the issuing CA's extendedKeyUsage does not include {wanted._name}: standard "
                "verifiers refuse this certificate for that purpose",
            )


def client_violations(cert: x509.Certificate) -> list[Finding]:
    """The profile errors of a client (device or service) certificate; ``[]`` when it fits.

    The gateway asks this at every handshake, so the gate and ``tether lint`` apply the same
    rules from this one module. Validity dates are left to the caller (an expired
    certificate has its own refusal code) and so is the issuer (checked by signature
    against the registry).
    """
    linter = _Linter(cert, [cert])
    try:
        findings = linter.run(primary=True, kind="client")
    except PARSE_ERRORS as exc:
        return [Finding("error", "certificate.unparseable", str(exc), linter.subject)]
    return [f for f in findings if f.severity == "error"]


def lint(cert: x509.Certificate, chain: Sequence[x509.Certificate] = ()) -> list[Finding]:
    """Findings for ``cert`` and every certificate of ``chain`` (its issuers, any order).

    Never raises for a loaded certificate; an empty list means the chain fits the profile.
    """
    pool: list[x509.Certificate] = []
    seen: set[str] = set()
    for candidate in (cert, *chain):
        fingerprint = sha256_fingerprint(candidate)
        if fingerprint not in seen:
            seen.add(fingerprint)
            pool.append(candidate)
    findings: list[Finding] = []
    for index, candidate in enumerate(pool):
        linter = _Linter(candidate, pool)
        try:
            findings.extend(linter.run(primary=index == 0))
        except PARSE_ERRORS as exc:
            # cryptography parses some fields lazily; a damaged one is a finding, not a crash.
            findings.extend(linter.findings)
            findings.append(
                Finding("error", "certificate.unparseable", f"a field cannot be parsed: {exc}",
                        linter.subject)
            )  # fmt: skip
    return findings
