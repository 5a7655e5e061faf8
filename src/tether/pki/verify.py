"""Path validation with ``cryptography.x509.verification``, relaxed only where documented.

The one relaxation: a client (device or service) leaf may come without a subjectAltName,
because Tether device certificates carry their identity in the subject CN only (see
``tether.pki.authority``). Everything else is the verifier's web-PKI default: signatures,
validity at ``at``, basicConstraints/pathLen, keyUsage, EKU clientAuth (serverAuth for
``verify_server_chain``). Revocation is not checked here: it comes from the registry and the
CRLs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography import x509
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from tether.pki.errors import ChainVerificationError


def _policy(roots: Sequence[x509.Certificate], at: datetime | None) -> PolicyBuilder:
    if not roots:
        raise ChainVerificationError("no trusted root given; pass the root CA certificate")
    builder = PolicyBuilder().store(Store(list(roots)))
    return builder.time(at if at is not None else datetime.now(UTC))


def verify_chain(
    leaf: x509.Certificate,
    *,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    at: datetime | None = None,
) -> list[x509.Certificate]:
    """Validate a client (clientAuth) ``leaf`` up to one of ``roots``; return the chain.

    The chain is leaf first, trust anchor last. Any failure raises
    ``ChainVerificationError`` with the verifier's reason.
    """
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    verifier = (
        _policy(roots, at)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        return list(verifier.verify(leaf, list(intermediates)).chain)
    except VerificationError as exc:
        raise ChainVerificationError(
            f"the certificate does not chain to a trusted Tether root: {exc}"
        ) from None


def verify_server_chain(
    leaf: x509.Certificate,
    *,
    name: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    at: datetime | None = None,
) -> list[x509.Certificate]:
    """Validate a server (serverAuth) ``leaf`` for ``name`` (DNS name or IP) up to ``roots``."""
    subject: x509.verification.Subject = (
        x509.IPAddress(name) if not isinstance(name, str) else x509.DNSName(name)
    )
    verifier = _policy(roots, at).build_server_verifier(subject)
    try:
        return list(verifier.verify(leaf, list(intermediates)))
    except VerificationError as exc:
        raise ChainVerificationError(
            f"the server certificate is not valid for {name}: {exc}"
        ) from None
