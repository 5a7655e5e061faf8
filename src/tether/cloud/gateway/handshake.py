"""The TLS half of a connection: the handshake on an accepted socket, and why it failed.

``loop.connect_accepted_socket(..., ssl=...)`` runs in the connection's own task, so a failed
handshake is raised here and logged with a stable refusal code (the peer did not present a
certificate, its CA is not registered, it offered TLS 1.1 or only CBC suites...) instead of
vanishing inside the event loop as it does with ``create_server(ssl=...)``. (Upgrading a plain
stream with ``start_tls`` races with the ClientHello on uvloop: the plain stream may read it.)
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable

from cryptography import x509

from tether.cloud.gateway.events import log_event
from tether.cloud.gateway.identity import certificate_fingerprint
from tether.cloud.gateway.streams import READ_CHUNK, close_writer

# OpenSSL X509_V_ERR_* codes a client certificate can fail with, mapped to refusal codes.
_VERIFY_CODES = {
    2: "ca_not_registered",  # unable to get issuer certificate
    7: "certificate_signature_invalid",
    9: "certificate_not_yet_valid",
    10: "certificate_expired",
    18: "ca_not_registered",  # self-signed leaf
    19: "ca_not_registered",  # self-signed certificate in chain
    20: "ca_not_registered",  # unable to get local issuer certificate
    21: "ca_not_registered",  # unable to verify the first certificate
    26: "profile_violation",  # unsupported certificate purpose (not clientAuth)
}
# OpenSSL reason strings for handshake failures that are not certificate verification.
_TLS_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no_client_certificate",
    "UNSUPPORTED_PROTOCOL": "tls_version_refused",
    "WRONG_VERSION_NUMBER": "tls_version_refused",
    "TLSV1_ALERT_PROTOCOL_VERSION": "tls_version_refused",
    "NO_SHARED_CIPHER": "tls_no_shared_cipher",
    "NO_SHARED_GROUPS": "tls_no_shared_cipher",
    "HTTP_REQUEST": "tls_not_tls",
}


def tls_refusal(exc: ssl.SSLError) -> str:
    """The refusal code of a failed handshake."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _VERIFY_CODES.get(exc.verify_code, "certificate_verify_failed")
    return _TLS_REASONS.get(exc.reason or "", "tls_handshake_failed")


async def tls_handshake(
    context: ssl.SSLContext,
    connection: socket.socket,
    peer: str,
    deadline: float,
    on_timeout: Callable[[str], None],
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, x509.Certificate] | None:
    """TLS on an accepted socket; failures are logged with a refusal code here.

    ``connect_accepted_socket`` hands the socket to the TLS protocol before any byte is
    read, and raises the handshake error to us (a server made with ``ssl=`` would only
    close the connection, leaving no reason to log).
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_CHUNK, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    try:
        async with asyncio.timeout_at(deadline):
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                connection,
                ssl=context,
                ssl_handshake_timeout=max(deadline - loop.time(), 0.1),
            )
    except ssl.SSLError as exc:
        code = tls_refusal(exc)
        detail = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        log_event(logging.WARNING, code, f"TLS handshake refused: {detail}", peer=peer)
        return None
    except TimeoutError:
        on_timeout(peer)
        return None
    except (OSError, EOFError) as exc:
        log_event(logging.INFO, "tls_handshake_aborted", f"peer went away ({exc})", peer=peer)
        return None
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if der is None:
        # Unreachable with CERT_REQUIRED; kept so a context change can never let one in.
        log_event(logging.WARNING, "no_client_certificate", "no client certificate", peer=peer)
        await close_writer(writer)
        return None
    leaf = x509.load_der_x509_certificate(der)
    cipher = ssl_object.cipher()
    log_event(
        logging.INFO,
        "tls_established",
        f"{ssl_object.version()} {cipher[0] if cipher else '?'}; client certificate "
        f"subject={leaf.subject.rfc4514_string()!r} issuer={leaf.issuer.rfc4514_string()!r} "
        f"sha256={certificate_fingerprint(leaf)}",
        peer=peer,
    )
    return reader, writer, leaf
