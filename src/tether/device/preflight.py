"""A stdlib ``ssl`` pre-flight handshake that learns what awscrt does not tell.

awscrt exposes neither the peer's chain nor the negotiated TLS version and cipher. This probe
opens its own handshake to the same endpoint with the same trust (the pinned CA only, never
the system store) and the same offer awscrt makes: TLS 1.2-1.3 with the device key file, or
TLS 1.2 only when the key is in a PKCS#11 token (awscrt's limit there). With a token key the
probe cannot sign (stdlib ``ssl`` cannot use a PKCS#11 key), so a server that requires a
client certificate ends the handshake after the probe has verified the server's chain; the
chain, version and cipher are still real and say where they came from.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tether.device.config import (
    CloudEndpoint,
    DeviceIdentity,
    FileKey,
    load_trust_anchors,
)
from tether.device.errors import ConnectionFailedError, DeviceTimeoutError, ServerNotTrustedError

_DER = 2  # _ssl.ENCODING_DER: the internal certificate objects' DER encoding


@dataclass(frozen=True)
class ServerFacts:
    """What the pre-flight saw: the verified chain (leaf first), version, cipher, outcome.

    ``verify_error`` is set only when the probe refused the server's certificate; an empty
    ``chain`` without it means the handshake ended before the certificate was seen.
    """

    trusted: bool
    verify_error: str | None
    chain: tuple[x509.Certificate, ...]
    tls_version: str | None
    tls_version_source: str
    cipher: str | None
    offered: str
    client_certificate: str
    outcome: str

    def require_trusted(self, endpoint: CloudEndpoint) -> None:
        """Raise ``server_not_trusted`` unless the server chained to the pinned CA.

        A handshake that ended before the server's chain was seen (no common TLS version, for
        one) is ``tls_handshake_failed``: trust was never decided.
        """
        if not self.trusted and self.verify_error is None:
            raise ConnectionFailedError(
                f"the TLS handshake with {endpoint.host}:{endpoint.port} ended before the "
                f"server presented a certificate: {self.outcome}. With a PKCS#11 key awscrt "
                "speaks TLS 1.2 only; the cloud must accept TLS 1.2",
                code="tls_handshake_failed",
            )
        if not self.trusted:
            raise ServerNotTrustedError(
                f"the server at {endpoint.host}:{endpoint.port} is not trusted: "
                f"{self.verify_error}. The device trusts only the pinned CA "
                f"{endpoint.pinned_ca} for the name {endpoint.expected_name!r}; check --ca, "
                "--host and that you reach the real cloud"
            )


def _context(identity: DeviceIdentity, endpoint: CloudEndpoint) -> tuple[ssl.SSLContext, bool]:
    pinned = load_trust_anchors(endpoint.pinned_ca)
    # SSLContext() (unlike create_default_context) loads no system certificates: the pinned
    # server CA is the whole trust store, an intermediate accepted as anchor as awscrt does.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(
        cadata="".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in pinned)
    )
    with_client_cert = isinstance(identity.key, FileKey)
    if with_client_cert:
        assert isinstance(identity.key, FileKey)
        context.load_cert_chain(str(identity.certificate), str(identity.key.path))
    else:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context, with_client_cert


def probe_server(identity: DeviceIdentity, endpoint: CloudEndpoint, timeout: float) -> ServerFacts:
    """Handshake with the endpoint using only the pinned CA; never raises for an untrusted server.

    Raises ``connection_failed`` when nothing answers and ``timeout`` when the server is silent;
    an untrusted server comes back as ``trusted=False`` with OpenSSL's reason.
    """
    context, with_client_cert = _context(identity, endpoint)
    offered = "TLS 1.2 and 1.3" if with_client_cert else "TLS 1.2 only (as awscrt with PKCS#11)"
    client_certificate = (
        "presented from the key file"
        if with_client_cert
        else "not presented (stdlib ssl cannot sign with a PKCS#11 key)"
    )
    try:
        raw = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    except TimeoutError as exc:
        raise DeviceTimeoutError(
            f"{endpoint.host}:{endpoint.port} did not accept a connection within {timeout:g} s"
        ) from exc
    except OSError as exc:
        raise ConnectionFailedError(
            f"cannot reach {endpoint.host}:{endpoint.port}: {exc.strerror or exc}; "
            "check --host and --port"
        ) from exc
    with raw:
        tls = context.wrap_socket(
            raw, server_hostname=endpoint.expected_name, do_handshake_on_connect=False
        )
        with tls:
            verify_error: str | None = None
            handshake_error: str | None = None
            try:
                tls.do_handshake()
                outcome = "handshake completed"
            except ssl.SSLCertVerificationError as exc:
                verify_error = exc.verify_message or exc.reason or str(exc)
                outcome = f"the probe refused the server certificate: {verify_error}"
            except ssl.SSLError as exc:
                handshake_error = str(exc.reason or exc)
                outcome = f"the server ended the handshake ({handshake_error})"
            except TimeoutError as exc:
                raise DeviceTimeoutError(
                    f"{endpoint.host}:{endpoint.port} did not finish the TLS handshake within "
                    f"{timeout:g} s"
                ) from exc
            except OSError as exc:
                raise ConnectionFailedError(
                    f"the TLS handshake with {endpoint.host}:{endpoint.port} failed: {exc}"
                ) from exc
            chain = _verified_chain(tls) if verify_error is None else ()
            if handshake_error is not None and chain:
                outcome = (
                    "the server ended the handshake after the probe verified its certificate "
                    f"({handshake_error}), as expected when no client certificate is sent"
                )
            cipher_info = tls._sslobj.cipher() if tls._sslobj is not None else None  # type: ignore[attr-defined]
            version = tls.version()
            version_source = "negotiated (stdlib ssl pre-flight)"
            if version is None and cipher_info is not None and not with_client_cert:
                version = "TLSv1.2"
                version_source = "the only version offered; the server chose a cipher for it"
    trusted = verify_error is None and bool(chain)
    return ServerFacts(
        trusted=trusted,
        verify_error=verify_error,
        chain=chain,
        tls_version=version,
        tls_version_source=version_source,
        cipher=cipher_info[0] if cipher_info else None,
        offered=offered,
        client_certificate=client_certificate,
        outcome=outcome,
    )


def _verified_chain(tls: ssl.SSLSocket) -> tuple[x509.Certificate, ...]:
    """The chain OpenSSL verified, leaf first, ending at the pinned CA.

    Python 3.13 made ``get_verified_chain`` public; 3.11 has it on the internal object. It
    also answers after a handshake the server aborted once the chain was verified.
    """
    sslobj = tls._sslobj  # type: ignore[attr-defined]
    getter = getattr(tls, "get_verified_chain", None) or getattr(sslobj, "get_verified_chain", None)
    if getter is None:
        return ()
    chain = getter() or []
    return tuple(x509.load_der_x509_certificate(c.public_bytes(_DER)) for c in chain)
