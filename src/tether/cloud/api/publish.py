"""The plain-HTTP publication point: CRLs and OCSP, nothing else, no credentials.

Relying parties (``openssl verify -crl_check``, TLS stacks that follow a CRL distribution
point or an OCSP URL) fetch revocation data over plain HTTP, by convention (RFC 5280
4.2.1.13, RFC 6960 appendix A): the data is signed, and checking it over TLS would need
revocation data for the TLS server first. So this app is separate from the admin API (which
is HTTPS only and needs a token): it serves

- ``GET /crl/root.crl`` and ``GET /crl/<CA fingerprint>.crl``: the same DER the API serves
  (``AdminOperations.crl``; the online CA's is signed here and re-signed in time,
  ``tether.cloud.crl_signing``);
- ``POST /ocsp`` (body ``application/ocsp-request``) and ``GET /ocsp/<base64 request>``: the
  online CA's OCSP responder (``tether.cloud.ocsp``), when the cloud holds that CA's key.

Bodies over 4 KiB are refused before they are read (413); errors leave as ``{"code",
"message"}`` like the API's.
"""

# No `from __future__ import annotations`: FastAPI resolves route signatures at runtime.

import asyncio
import base64
import binascii
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tether import __version__
from tether.cloud.api.errors import status_for
from tether.cloud.ocsp import MAX_REQUEST_BYTES, OCSP_RESPONSE_TYPE, OcspResponder
from tether.cloud.operations import AdminOperations
from tether.errors import TetherError

T = TypeVar("T")
CRL_MEDIA_TYPE = "application/pkix-crl"
PUBLISH_THREADS = 2


def create_publish_app(
    operations: AdminOperations, *, ocsp_responder: OcspResponder | None = None
) -> FastAPI:
    """The CRL and OCSP app; ``app.state.tether_close()`` stops its thread pool."""
    executor = ThreadPoolExecutor(PUBLISH_THREADS, thread_name_prefix="tether-publish")
    app = FastAPI(
        title="Tether CRLs and OCSP",
        version=__version__,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.tether_close = lambda: executor.shutdown(wait=False, cancel_futures=True)

    async def run(fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, partial(fn, *args))

    @app.exception_handler(TetherError)
    async def _tether_error(_request: Request, exc: TetherError) -> JSONResponse:
        return JSONResponse({"code": exc.code, "message": exc.message}, status_for(exc))

    def _crl(der: bytes) -> Response:
        return Response(der, media_type=CRL_MEDIA_TYPE, headers={"Cache-Control": "max-age=60"})

    @app.get("/crl/{name}.crl")
    async def crl(name: str) -> Response:
        """A CRL (DER): ``root`` or a registered CA's fingerprint."""
        return _crl(await run(operations.crl, name.lower()))

    def _ocsp(der: bytes) -> Response:
        return Response(der, media_type=OCSP_RESPONSE_TYPE, headers={"Cache-Control": "no-cache"})

    def _no_responder() -> JSONResponse:
        return JSONResponse(
            {
                "code": "ocsp_not_available",
                "message": "the cloud holds no issuing CA key to answer OCSP with; check the "
                "CA's CRL instead",
            },
            404,
        )

    @app.post("/ocsp")
    async def ocsp_post(request: Request) -> Response:
        """An OCSP answer for a DER request in the body."""
        if ocsp_responder is None:
            return _no_responder()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_REQUEST_BYTES):
            return JSONResponse({"code": "ocsp_request_too_large", "message": "at most 4 KiB"}, 413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_REQUEST_BYTES:
                return JSONResponse(
                    {"code": "ocsp_request_too_large", "message": "at most 4 KiB"}, 413
                )
        return _ocsp(await run(ocsp_responder.respond, body))

    @app.get("/ocsp/{encoded:path}")
    async def ocsp_get(encoded: str) -> Response:
        """An OCSP answer for a base64 request in the path (RFC 6960 A.1)."""
        if ocsp_responder is None:
            return _no_responder()
        if len(encoded) > MAX_REQUEST_BYTES * 2:
            return JSONResponse({"code": "ocsp_request_too_large", "message": "at most 4 KiB"}, 413)
        try:
            der = base64.b64decode(encoded.replace("%2B", "+").replace("%2F", "/"), validate=False)
        except (binascii.Error, ValueError):
            der = b""
        return _ocsp(await run(ocsp_responder.respond, der))

    return app
