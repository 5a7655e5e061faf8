"""The five handshake steps of one connection, with real values and where each came from.

awscrt connects but does not report the peer chain, the TLS version or the cipher; those come
from the stdlib pre-flight (``tether.device.preflight``) with the same trust and the same
offer. The device's own certificate and key facts come from its files and its token; the
verdict is the CONNACK awscrt received. Each step says its sources in a ``source`` fact.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tether.device.config import CloudEndpoint, DeviceIdentity, load_trust_anchors
from tether.device.connection import ConnectResult
from tether.device.keys import KeyFacts
from tether.device.preflight import ServerFacts


@dataclass(frozen=True)
class ExplainStep:
    """One handshake step: its number (1-5), a title, and facts as label -> value."""

    number: int
    title: str
    facts: dict[str, str]


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 fingerprint as ``openssl x509 -fingerprint -sha256`` prints it (AA:BB:...)."""
    return ":".join(f"{b:02X}" for b in certificate.fingerprint(hashes.SHA256()))


def _validity(certificate: x509.Certificate) -> str:
    start = certificate.not_valid_before_utc.isoformat()
    end = certificate.not_valid_after_utc.isoformat()
    return f"{start} to {end}"


def _san(certificate: x509.Certificate) -> str:
    try:
        ext = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return "none"
    names = [str(n.value) for n in ext.value]
    return ", ".join(names) or "none"


def explain_steps(
    identity: DeviceIdentity,
    endpoint: CloudEndpoint,
    server: ServerFacts,
    key: KeyFacts,
    verdict: ConnectResult,
) -> list[ExplainStep]:
    """Build the five steps from facts gathered by a real pre-flight and a real connection."""
    pinned = load_trust_anchors(endpoint.pinned_ca)
    leaf = server.chain[0] if server.chain else None
    step1: dict[str, str] = {
        "pinned CA": ", ".join(c.subject.rfc4514_string() for c in pinned),
        "pinned CA fingerprint": ", ".join(fingerprint(c) for c in pinned),
        "trust store": f"{endpoint.pinned_ca} only (system store not loaded)",
        "checked name": endpoint.expected_name,
        "verdict": "trusted" if server.trusted else f"NOT trusted: {server.verify_error}",
    }
    if leaf is not None:
        step1.update(
            {
                "server subject": leaf.subject.rfc4514_string(),
                "server SAN": _san(leaf),
                "server fingerprint": fingerprint(leaf),
                "server validity": _validity(leaf),
                "verified chain": " <- ".join(c.subject.rfc4514_string() for c in server.chain),
            }
        )
    step1["source"] = (
        f"stdlib ssl pre-flight with the pinned CA only ({server.outcome}); awscrt verified "
        "the server against the same pinned CA and the connection succeeded"
    )

    certificate = identity.load_certificate()
    step2 = {
        "subject": certificate.subject.rfc4514_string(),
        "serial number": f"{certificate.serial_number:x}",
        "issuer": certificate.issuer.rfc4514_string(),
        "fingerprint": fingerprint(certificate),
        "validity": _validity(certificate),
        "MQTT client id": f"{identity.serial} (the certificate's CN)",
        "source": f"device certificate file {identity.certificate}, presented by awscrt",
    }

    step3 = {"where the key lives": key.location, **key.facts}
    if key.kind == "pkcs11":
        step3["handshake signature"] = (
            "TLS 1.2 CertificateVerify signed by awscrt through C_Sign in the token; the "
            "private key never left it"
        )
        step3["source"] = "the token's attributes, read over PKCS#11 before connecting"
    else:
        step3["handshake signature"] = (
            "CertificateVerify signed in process memory by awscrt (s2n) with the key file: "
            "a software emulator, not a secure element"
        )
        step3["source"] = "the key file"

    step4 = {
        "CONNACK reason code": f"{verdict.reason_code} ({verdict.reason_name})",
        "client id": verdict.client_id,
        "session present": str(verdict.session_present),
        **verdict.properties,
        "source": "the CONNACK awscrt received and its negotiated settings",
    }

    step5 = {
        "TLS version": server.tls_version or "unknown",
        "version source": server.tls_version_source,
        "cipher": server.cipher or "unknown",
        "offered by the pre-flight": server.offered,
        "client certificate in the pre-flight": server.client_certificate,
        "source": "stdlib ssl pre-flight making the same offer as awscrt; awscrt does not "
        "expose the negotiated version or cipher",
    }
    return [
        ExplainStep(1, "Server chain checked against the pinned CA", step1),
        ExplainStep(2, "Device certificate presented", step2),
        ExplainStep(3, "Possession proved: signature made by the device key", step3),
        ExplainStep(4, "The cloud's verdict", step4),
        ExplainStep(5, "TLS version and cipher", step5),
    ]
