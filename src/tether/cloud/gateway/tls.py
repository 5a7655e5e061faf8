"""The gateway's TLS server context: mutual TLS, modern suites only, trust = registered CAs.

TLS 1.2 and 1.3 only. TLS 1.2 is limited to ECDHE key exchange with AEAD ciphers (AES-GCM,
ChaCha20-Poly1305): no CBC, no RSA key exchange. Compression and renegotiation are off. A
client certificate is required and is verified against the authority's CAs only (never the
system store); ``VERIFY_X509_PARTIAL_CHAIN`` lets an intermediate (issuing) CA be a trust
anchor, because Python 3.11's server side sees only the peer's leaf. Session tickets are off
so every connection is a full handshake with a fresh CertificateVerify from the client's key.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tether.cloud.gateway.errors import GatewayConfigurationError

TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


def build_server_context(
    *,
    certificate_chain: Path,
    private_key: Path,
    trusted_cas: Sequence[x509.Certificate],
) -> ssl.SSLContext:
    """A server ``SSLContext`` for the gateway.

    ``certificate_chain`` is the PEM server certificate followed by its issuing CA(s);
    ``private_key`` its unencrypted PEM key (the file's permissions protect it). With an empty
    ``trusted_cas`` every client certificate is refused. Raises
    ``GatewayConfigurationError`` if the files cannot be loaded.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(TLS12_CIPHERS)  # TLS 1.3 suites are all AEAD; OpenSSL's default set
    context.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_SINGLE_ECDH_USE
        | ssl.OP_NO_TICKET
    )
    context.num_tickets = 0
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        context.load_cert_chain(certfile=certificate_chain, keyfile=private_key)
    except (OSError, ssl.SSLError) as exc:
        raise GatewayConfigurationError(
            f"Cannot load the gateway certificate {certificate_chain} and key {private_key} "
            f"({exc}); check the paths, that the key matches the certificate and is not "
            "encrypted.",
            code="gateway_tls_credentials",
        ) from exc
    if trusted_cas:
        pem = "".join(ca.public_bytes(Encoding.PEM).decode("ascii") for ca in trusted_cas)
        context.load_verify_locations(cadata=pem)
    return context
