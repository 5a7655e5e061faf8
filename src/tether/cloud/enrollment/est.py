"""EST (RFC 7030) over mutual TLS: ``/.well-known/est/cacerts``, ``simpleenroll``,
``simplereenroll`` and ``csrattrs``, served by Tether itself.

uvicorn does not hand the TLS client certificate to the application, and EST authenticates
by it, so this is a listener of its own: asyncio + stdlib ``ssl`` (the gateway's TLS settings,
:func:`~tether.cloud.gateway.tls.build_server_context`, with the client certificate optional
so a device holding only a one-time token can enroll) and ``h11`` for HTTP/1.1, one request
per connection. The verified client certificate goes through the same authority as a gateway
handshake (profile, registered CA, revocation, claim), so EST accepts exactly what MQTT does.

- ``simpleenroll``: the birth credential is the client certificate (factory or claim), else a
  one-time token as ``Authorization: Bearer <token>`` or as the Basic password.
- ``simplereenroll``: the client certificate is the current operational certificate.
- Answers are base64 DER PKCS#7 certs-only (``application/pkcs7-mime; smime-type=certs-only``);
  ``csrattrs`` asks for ECDSA with SHA-256 on a P-256 key.
- A refusal is ``error (<code>): <what to do>`` as text/plain with the HTTP status every
  TetherError gets (``cloud/api/errors.status_for``) and the code in ``Tether-Error-Code``.

Bounds: request bodies over ``MAX_BODY`` are refused before they are read (413), a request
must arrive within ``request_deadline`` seconds, at most ``max_connections`` are served at
once (more wait in the kernel's backlog), and enrollments run on ``threads`` threads of their
own (``tether-est``), never on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h11
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from tether.cloud.api.errors import status_for
from tether.cloud.authority import RegistryAuthority
from tether.cloud.enrollment.service import (
    Credential,
    CredentialKind,
    EnrollmentNotAllowedError,
    EnrollmentService,
)
from tether.cloud.gateway.identity import HandshakeRefused, Identity
from tether.cloud.gateway.tls import build_server_context
from tether.errors import AuthenticationError, InvalidInputError, NotFoundError, TetherError

log = logging.getLogger("tether.est")

PREFIX = "/.well-known/est/"
MAX_BODY = 64 * 1024
PKCS7_TYPE = "application/pkcs7-mime; smime-type=certs-only"
# CsrAttrs (RFC 7030 4.5.2): ecdsa-with-SHA256, and id-ecPublicKey with prime256v1.
_OID_ECDSA_SHA256 = bytes.fromhex("06082a8648ce3d040302")
_OID_EC_PUBLIC_KEY = bytes.fromhex("06072a8648ce3d0201")
_OID_P256 = bytes.fromhex("06082a8648ce3d030107")


def _der(tag: int, content: bytes) -> bytes:
    assert len(content) < 128  # short form is all CsrAttrs needs
    return bytes([tag, len(content)]) + content


CSR_ATTRS = _der(0x30, _OID_ECDSA_SHA256 + _der(0x30, _OID_EC_PUBLIC_KEY + _der(0x31, _OID_P256)))


class EstNoCredentialError(AuthenticationError):
    """simpleenroll without a client certificate or an enrollment token."""

    code = "est_no_credential"


class EstNotFoundError(NotFoundError):
    """Not an EST path this server offers."""

    code = "est_not_found"


class EstBodyError(InvalidInputError):
    """The body is not base64 DER, or too large."""

    code = "est_bad_body"


def certs_only(certificates: list[x509.Certificate]) -> bytes:
    """Base64 (76-column lines) of a DER PKCS#7 certs-only structure: the EST answer body."""
    der = pkcs7.serialize_certificates(certificates, Encoding.DER)
    return base64.encodebytes(der)


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: bytes
    content_type: str = PKCS7_TYPE
    code: str | None = None


def _refusal(error: TetherError) -> _Reply:
    status = 413 if error.code == "est_body_too_large" else status_for(error)
    return _Reply(
        status, f"error ({error.code}): {error.message}\n".encode(), "text/plain", error.code
    )


def _token_from(headers: dict[bytes, bytes]) -> str | None:
    value = headers.get(b"authorization", b"").decode("latin-1").strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer" and rest.strip():
        return rest.strip()
    if scheme.lower() == "basic" and rest.strip():
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def _csr_body(body: bytes) -> bytes:
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except binascii.Error:
        raise EstBodyError(
            "the body must be a base64-encoded DER PKCS#10 request (RFC 7030 4.2.1)"
        ) from None


class EstServer:
    """The EST listener over one EnrollmentService and the cloud's identity authority."""

    def __init__(
        self,
        enrollment: EnrollmentService,
        authority: RegistryAuthority,
        *,
        certificate_chain: Path,
        private_key: Path,
        host: str = "127.0.0.1",
        port: int = 8444,
        request_deadline: float = 10.0,
        max_connections: int = 256,
        threads: int = 16,
    ) -> None:
        self.enrollment = enrollment
        self.authority = authority
        self.host = host
        self.port = port
        self.request_deadline = request_deadline
        self._certificate_chain = certificate_chain
        self._private_key = private_key
        self._slots = asyncio.Semaphore(max_connections)
        self._threads = ThreadPoolExecutor(threads, thread_name_prefix="tether-est")
        self._server: asyncio.Server | None = None
        self._context = self._build_context()

    def _build_context(self) -> ssl.SSLContext:
        context = build_server_context(
            certificate_chain=self._certificate_chain,
            private_key=self._private_key,
            trusted_cas=self.authority.trusted_ca_certificates(),
        )
        context.verify_mode = ssl.CERT_OPTIONAL  # a token holder has no certificate yet
        return context

    def reload_trust(self) -> None:
        """Trust the registry's active client CAs as they are now (new connections)."""
        self._context = self._build_context()

    async def start(self) -> int:
        """Listen; returns the bound port."""
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, ssl=self._context, ssl_handshake_timeout=10
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and the enrollment threads."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self._slots:
            try:
                async with asyncio.timeout(self.request_deadline):
                    await self._serve_one(reader, writer)
            except (TimeoutError, ConnectionError, ssl.SSLError, h11.ProtocolError):
                pass
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 2)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        request: h11.Request | None = None
        body = bytearray()
        reply: _Reply | None = None
        while reply is None:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(16 * 1024)
                conn.receive_data(data)
                if not data and conn.their_state is not h11.DONE:
                    return
                continue
            if isinstance(event, h11.Request):
                request = event
                length = dict(event.headers).get(b"content-length")
                if length is not None and length.isdigit() and int(length) > MAX_BODY:
                    reply = _refusal(
                        EstBodyError(
                            f"the body is larger than {MAX_BODY} bytes",
                            code="est_body_too_large",
                        )
                    )
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    reply = _refusal(
                        EstBodyError(
                            f"the body is larger than {MAX_BODY} bytes",
                            code="est_body_too_large",
                        )
                    )
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                reply = await self._answer(request, bytes(body), writer)
            elif isinstance(event, h11.ConnectionClosed):
                return
        headers = [
            ("Content-Type", reply.content_type),
            ("Content-Length", str(len(reply.body))),
            ("Connection", "close"),
            ("Cache-Control", "no-store"),
        ]
        if reply.content_type == PKCS7_TYPE:
            headers.append(("Content-Transfer-Encoding", "base64"))
        if reply.code is not None:
            headers.append(("Tether-Error-Code", reply.code))
        writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)))
        writer.write(conn.send(h11.Data(data=reply.body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()

    async def _answer(
        self, request: h11.Request, body: bytes, writer: asyncio.StreamWriter
    ) -> _Reply:
        path = request.target.decode("latin-1").split("?", 1)[0]
        method = request.method.decode("latin-1")
        operation = path.removeprefix(PREFIX) if path.startswith(PREFIX) else None
        try:
            if operation == "cacerts" and method == "GET":
                return _Reply(200, certs_only(list(self.enrollment.ca_certificates)))
            if operation == "csrattrs" and method == "GET":
                return _Reply(200, base64.encodebytes(CSR_ATTRS), "application/csrattrs")
            if operation in ("simpleenroll", "simplereenroll") and method == "POST":
                identity = await self._identity(writer)
                headers = dict(request.headers)
                csr = _csr_body(body)
                loop = asyncio.get_running_loop()
                if operation == "simplereenroll":
                    if identity is None:
                        raise EstNoCredentialError(
                            "simplereenroll needs the current certificate as the TLS client "
                            "certificate"
                        )
                    outcome = await loop.run_in_executor(
                        self._threads, self.enrollment.renew, csr, identity
                    )
                else:
                    credential = self._credential(identity, _token_from(headers))
                    outcome = await loop.run_in_executor(
                        self._threads, self.enrollment.enroll, csr, credential
                    )
                log.info(
                    "[est_%s] %s: %s (%s)",
                    operation,
                    outcome.serial,
                    outcome.result.value,
                    "retry" if outcome.replayed else "new",
                    extra={"tether_code": f"enrollment_{outcome.result.value}"},
                )
                return _Reply(200, certs_only([outcome.certificate]))
            raise EstNotFoundError(
                f"{method} {path} is not an EST operation here; use {PREFIX}cacerts, "
                "simpleenroll, simplereenroll or csrattrs"
            )
        except TetherError as error:
            log.warning(
                "[%s] EST %s refused: %s", error.code, path, error.message,
                extra={"tether_code": error.code},
            )  # fmt: skip
            return _refusal(error)

    def _credential(self, identity: Identity | None, token: str | None) -> Credential:
        if identity is not None:
            credential = self.enrollment.credential_for(identity)
            if credential.kind is CredentialKind.CURRENT:
                raise EnrollmentNotAllowedError(
                    "this certificate is already an operational one: use simplereenroll"
                )
            return credential
        if token is None:
            raise EstNoCredentialError(
                "simpleenroll needs a birth credential: the factory or claim certificate as "
                "TLS client certificate, or a one-time token (Authorization: Bearer <token>)"
            )
        return Credential(CredentialKind.TOKEN, token=token)

    async def _identity(self, writer: asyncio.StreamWriter) -> Identity | None:
        """The verified client certificate's identity (as a gateway handshake), or None."""
        ssl_object = writer.get_extra_info("ssl_object")
        der = None if ssl_object is None else ssl_object.getpeercert(binary_form=True)
        if not der:
            return None
        leaf = x509.load_der_x509_certificate(der)
        try:
            return await self.authority.in_verdict_lane(self.authority.authorize_sync, leaf)
        except HandshakeRefused as refused:
            raise refused from None
