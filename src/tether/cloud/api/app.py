"""The admin API: FastAPI routes over :class:`AdminOperations`, bearer-token authentication.

Every write goes through the admin service (``tether.cloud.operations``); reads go to the
registry directly. Over 400 lines on purpose: it is the route table, one short route per
endpoint, kept in one place so the API's surface reads top to bottom.

Every route under ``/api/v1`` needs ``Authorization: Bearer <admin token>`` (401 otherwise)
and answers ``Cache-Control: no-store``. The token is checked by ``guard.RequestGuard``
before any route runs and before the body is read (bounded, on its own lane: see ``guard``);
routes only pick up the administrator it found. Registry and PKI work runs on the API's own
thread pool (``api_limits.api_threads``), never on the loop's default executor, which belongs
to the gateway's verdicts and revocation feed. Two things are public on purpose: the OpenAPI
description (``/openapi.json``, ``/docs``) and the CRLs under ``/crl/`` (relying parties fetch
CRLs without credentials; they are signed and hold nothing secret). Every change lands in the
registry's audit log with the admin's name as actor. Errors leave as ``{"code", "message"}``
with the status picked in :func:`tether.cloud.api.errors.status_for`.
"""

# No `from __future__ import annotations`: FastAPI resolves the route signatures at runtime,
# and they use aliases local to create_app (Admin, Offset, Limit).

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Annotated, Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tether import __version__
from tether.cloud.admin import AdminCredentialError
from tether.cloud.api.console import console_router
from tether.cloud.api.enrollment import enrollment_router
from tether.cloud.api.errors import LimitExceededError, status_for
from tether.cloud.api.guard import ADMIN_STATE_KEY, AdminGuard, RequestGuard
from tether.cloud.api.policies import policy_router
from tether.cloud.api.schemas import (
    AdminOut,
    AdminTokenOut,
    AuditPage,
    CAOut,
    CAStatusIn,
    CertificateOut,
    CertificatePage,
    ConsoleBundleOut,
    CrlEffectOut,
    CrlIn,
    CsrDeviceOut,
    CsrIn,
    DeviceDetailOut,
    DeviceOut,
    DevicePage,
    ErrorOut,
    LimitsOut,
    MoveDeviceIn,
    NewAdminIn,
    NewDeviceIn,
    RegisterCAIn,
    RegisterCertificateIn,
    RegisteredCertificateOut,
    RegistrationCodeOut,
    RevokeIn,
    WhoAmIOut,
)
from tether.cloud.device_state import device_states
from tether.cloud.hygiene import HygieneOptions, HygieneReport, LiveView
from tether.cloud.hygiene import audit as audit_hygiene
from tether.cloud.observability.live import LiveViewUnavailable
from tether.cloud.observability.metrics import ApiMetrics, CountedRequests
from tether.cloud.observability.overview import RefusalHistory, fleet_overview
from tether.cloud.operations import AdminOperations
from tether.cloud.registry import (
    ROOT_CRL_ISSUER,
    AdminRecord,
    CAStatus,
    DeviceStatus,
    Registry,
)
from tether.cloud.settings import ApiLimitOptions
from tether.errors import TetherError
from tether.pki import IssuingCA
from tether.pki.files import parse_reason

T = TypeVar("T")
CRL_MEDIA_TYPE = "application/pkix-crl"
_bearer = HTTPBearer(auto_error=False, description="An admin token from `tether cloud init`.")
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (400, 401, 404, 409, 413, 422, 429, 503)
}
_MISSING = (
    "The admin credential is missing or not valid; send `Authorization: Bearer <token>` with "
    "a token from `tether cloud init` or `tether cloud admin add`."
)


def _error(
    status: int, code: str, message: str, *, retry_after: float | None = None
) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="tether"'
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, int(retry_after + 0.999)))
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def create_app(
    registry: Registry,
    *,
    root_certificate: x509.Certificate,
    online_ca: IssuingCA | None = None,
    operations: AdminOperations | None = None,
    limits: ApiLimitOptions | None = None,
    live_view: Callable[[], LiveView] | None = None,
    gateway_metrics: Callable[[], str] | None = None,
) -> FastAPI:
    """The admin API app for ``registry``; ``online_ca`` enables console/CSR provisioning.

    ``live_view`` reads the gateway's sessions for the hygiene audit's live checks (raising
    ``LiveViewUnavailable``); without it those checks are reported as skipped.
    ``gateway_metrics`` reads the gateway's ``/metrics`` text for the console's overview.

    ``limits`` bounds the request path (defaults: ``ApiLimitOptions()``). The app owns two
    thread pools (API work, token checks); ``app.state.tether_close()`` shuts them down
    (``ApiServer.stop`` calls it).
    """
    limits = limits or ApiLimitOptions()
    ops = operations or AdminOperations(
        registry, root_certificate=root_certificate, online_ca=online_ca
    )
    executor = ThreadPoolExecutor(limits.api_threads, thread_name_prefix="tether-api")
    guard = AdminGuard(registry, limits, executor)
    app = FastAPI(
        title="Tether admin API",
        version=__version__,
        description="Devices, certificates, CAs, CRLs and the audit log of a Tether cloud.",
        responses=_ERRORS,
    )

    def close() -> None:
        guard.close()
        executor.shutdown(wait=False, cancel_futures=True)

    app.state.tether_close = close
    app.state.tether_guard = guard

    async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # The registry and the PKI are synchronous: keep the event loop (and the gateway on
        # it) free while they work, on the API's own pool (not the default executor).
        return await asyncio.get_running_loop().run_in_executor(
            executor, partial(fn, *args, **kwargs)
        )

    async def admin(
        request: Request,
        _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> AdminRecord:
        # RequestGuard checked the token before the route (and its body); ``_credentials``
        # only puts the bearer scheme into the OpenAPI description.
        found = request.scope.get("state", {}).get(ADMIN_STATE_KEY)
        if not isinstance(found, AdminRecord):
            raise AdminCredentialError(_MISSING)
        return found

    Admin = Annotated[AdminRecord, Depends(admin)]
    Offset = Annotated[int, Query(ge=0)]
    Limit = Annotated[int, Query(ge=1, le=1000)]

    @app.exception_handler(TetherError)
    async def _tether_error(_request: Request, exc: TetherError) -> JSONResponse:
        retry = exc.retry_after if isinstance(exc, LimitExceededError) else None
        return _error(status_for(exc), exc.code, exc.message, retry_after=retry)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return _error(422, "invalid_request", f"The request was refused: {problems}")

    @app.middleware("http")
    async def _no_store(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        if request.url.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    # -- who am I --------------------------------------------------------------------------

    @app.get("/api/v1/whoami", response_model=WhoAmIOut, tags=["admin"])
    async def whoami(who: Admin) -> WhoAmIOut:
        """The admin the credential belongs to."""
        return WhoAmIOut(name=who.name)

    # -- admins and limits -----------------------------------------------------------------

    @app.get("/api/v1/admins", response_model=list[AdminOut], tags=["admin"])
    async def list_admins(who: Admin) -> list[AdminOut]:
        """Every administrator, active and revoked (never a token or hash)."""
        return [AdminOut.of(r) for r in await run(registry.list_admins)]

    @app.post("/api/v1/admins", status_code=201, response_model=AdminTokenOut, tags=["admin"])
    async def create_admin(who: Admin, body: NewAdminIn) -> AdminTokenOut:
        """Another administrator; its token is in this response only (the hash is kept)."""
        issued = await run(ops.create_admin, body.name, actor=who.name)
        return AdminTokenOut(
            name=issued.name,
            token=issued.token,
            warning="This token is shown once; only its hash is kept.",
        )

    @app.post("/api/v1/admins/{name}/rotate", response_model=AdminTokenOut, tags=["admin"])
    async def rotate(who: Admin, name: str) -> AdminTokenOut:
        """A new token for ``name``, shown once; the old one is refused from now on."""
        issued = await run(ops.rotate_admin, name, actor=who.name)
        return AdminTokenOut(name=issued.name, token=issued.token)

    @app.post("/api/v1/admins/{name}/revoke", response_model=AdminOut, tags=["admin"])
    async def revoke(who: Admin, name: str) -> AdminOut:
        """Revoke ``name`` for good (409 for the last active admin); refused from now on."""
        return AdminOut.of(await run(ops.revoke_admin, name, actor=who.name))

    @app.get("/api/v1/limits", response_model=LimitsOut, tags=["admin"])
    async def limits_report(who: Admin) -> LimitsOut:
        """The API's bounds (``api_limits`` in cloud.json) and how often each acted."""
        return LimitsOut.model_validate(guard.report())

    # -- devices ---------------------------------------------------------------------------

    @app.get("/api/v1/devices", response_model=DevicePage, tags=["devices"])
    async def list_devices(
        who: Admin,
        search: Annotated[str | None, Query(max_length=128)] = None,
        status: DeviceStatus | None = None,
        offset: Offset = 0,
        limit: Limit = 50,
    ) -> DevicePage:
        """Devices by serial; ``search`` matches any part of the serial."""
        page = await run(
            registry.list_devices, search=search, status=status, offset=offset, limit=limit
        )
        states = await run(device_states, registry, page.items, live_view=live_view)
        return DevicePage.of(page).with_states(states)

    @app.post(
        "/api/v1/devices",
        status_code=201,
        response_model=ConsoleBundleOut | CsrDeviceOut,
        tags=["devices"],
    )
    async def create_device(who: Admin, body: NewDeviceIn) -> ConsoleBundleOut | CsrDeviceOut:
        """Create a device: from its CSR (key stays on the device), or with a cloud-made key.

        Without ``csr_pem`` the answer carries the private key, once (``key_escrow_warning``).
        """
        ops.check_labels(body.groups, body.attributes)
        labels = partial(
            ops.label_device, body.serial, groups=body.groups, attributes=body.attributes
        )
        if body.csr_pem is not None:
            device, cert = await run(
                ops.create_csr_device, body.serial, body.csr_pem.encode(), actor=who.name
            )
            await run(labels, actor=who.name)
            return CsrDeviceOut(
                device=DeviceOut.of(device),
                certificate=CertificateOut.of(cert),
                root_ca_pem=ops.root_certificate.public_bytes(Encoding.PEM).decode("ascii"),
                pinned_ca_pem=ops.pinned_ca_pem,
            )
        bundle = await run(ops.create_console_device, body.serial, actor=who.name)
        await run(labels, actor=who.name)
        return ConsoleBundleOut(
            device=DeviceOut.of(bundle.device),
            certificate=CertificateOut.of(bundle.certificate),
            root_ca_pem=bundle.root_ca_pem,
            pinned_ca_pem=bundle.pinned_ca_pem,
            certificate_pem=bundle.certificate_pem,
            private_key_pem=bundle.private_key_pem,
        )

    @app.get("/api/v1/devices/{serial}", response_model=DeviceDetailOut, tags=["devices"])
    async def get_device(who: Admin, serial: str) -> DeviceDetailOut:
        """One device and its certificates."""
        device = await run(registry.get_device, serial)
        certs = await run(registry.list_certificates, device_serial=serial, limit=1000)
        states = await run(device_states, registry, [device], certificates={serial: certs.items})
        return DeviceDetailOut(
            device=DeviceOut.of(device),
            certificates=[CertificateOut.of(c) for c in certs.items],
            state=states[serial].label,
        )

    @app.post(
        "/api/v1/devices/{serial}/certificates",
        status_code=201,
        response_model=CertificateOut,
        tags=["devices"],
    )
    async def sign_csr(who: Admin, serial: str, body: CsrIn) -> CertificateOut:
        """Sign a CSR for a known device (the key stays on the device)."""
        record = await run(ops.sign_csr, serial, body.csr_pem.encode(), actor=who.name)
        return CertificateOut.of(record)

    async def _set_status(serial: str, status: DeviceStatus, who: AdminRecord) -> DeviceOut:
        return DeviceOut.of(await run(ops.set_device_status, serial, status, actor=who.name))

    @app.post("/api/v1/devices/{serial}/disable", response_model=DeviceOut, tags=["devices"])
    async def disable_device(who: Admin, serial: str) -> DeviceOut:
        """Disable: the next handshake is refused and a live session is dropped."""
        return await _set_status(serial, DeviceStatus.DISABLED, who)

    @app.post("/api/v1/devices/{serial}/enable", response_model=DeviceOut, tags=["devices"])
    async def enable_device(who: Admin, serial: str) -> DeviceOut:
        """Enable a disabled device again."""
        return await _set_status(serial, DeviceStatus.ENABLED, who)

    @app.post("/api/v1/devices/{serial}/ca", response_model=DeviceOut, tags=["devices"])
    async def move_device(who: Admin, serial: str, body: MoveDeviceIn) -> DeviceOut:
        """Move a device to another CA: from now on only that CA's certificates are accepted
        for the serial (a serial belongs to one CA); live sessions under the old CA drop."""
        record = await run(
            ops.rebind_device, serial, ca_fingerprint=body.ca_fingerprint, actor=who.name
        )
        return DeviceOut.of(record)

    # -- certificates ----------------------------------------------------------------------

    @app.get("/api/v1/certificates", response_model=CertificatePage, tags=["certificates"])
    async def list_certificates(
        who: Admin,
        device: Annotated[str | None, Query(max_length=128)] = None,
        issuer: Annotated[str | None, Query(max_length=128)] = None,
        offset: Offset = 0,
        limit: Limit = 50,
        serial_number: Annotated[str | None, Query(max_length=128)] = None,
    ) -> CertificatePage:
        """Certificates in the order they were added, optionally of one device or issuer, or
        by X.509 serial number (hex, as ``openssl x509 -serial`` prints it)."""
        page = await run(
            registry.list_certificates,
            device_serial=device,
            issuer_fingerprint=issuer,
            serial_number=serial_number,
            offset=offset,
            limit=limit,
        )
        return CertificatePage.of(page)

    @app.post(
        "/api/v1/certificates",
        status_code=201,
        response_model=RegisteredCertificateOut,
        tags=["certificates"],
    )
    async def register_certificate(
        who: Admin, body: RegisterCertificateIn
    ) -> RegisteredCertificateOut:
        """Register a certificate a registered CA signed elsewhere (a service identity, an
        offline ``sign-csr``), with the checks just-in-time registration applies."""
        device, record = await run(
            ops.register_certificate, body.certificate_pem.encode(), actor=who.name
        )
        return RegisteredCertificateOut(
            device=DeviceOut.of(device), certificate=CertificateOut.of(record)
        )

    @app.get(
        "/api/v1/certificates/{fingerprint}", response_model=CertificateOut, tags=["certificates"]
    )
    async def get_certificate(who: Admin, fingerprint: str) -> CertificateOut:
        """One certificate by its SHA-256 fingerprint."""
        return CertificateOut.of(await run(registry.get_certificate, fingerprint))

    @app.post(
        "/api/v1/certificates/{fingerprint}/revoke",
        response_model=CertificateOut,
        tags=["certificates"],
    )
    async def revoke_certificate(who: Admin, fingerprint: str, body: RevokeIn) -> CertificateOut:
        """Revoke with a RFC 5280 reason: refused from the next handshake, session dropped."""
        reason = parse_reason(body.reason) or x509.ReasonFlags.unspecified
        record = await run(ops.revoke_certificate, fingerprint, reason=reason, actor=who.name)
        return CertificateOut.of(record)

    # -- CAs -------------------------------------------------------------------------------

    @app.get("/api/v1/cas", response_model=list[CAOut], tags=["cas"])
    async def list_cas(who: Admin, status: CAStatus | None = None) -> list[CAOut]:
        """Registered CAs, oldest first."""
        return [CAOut.of(r) for r in await run(registry.list_cas, status=status)]

    @app.post(
        "/api/v1/cas/registration-codes",
        status_code=201,
        response_model=RegistrationCodeOut,
        tags=["cas"],
    )
    async def new_registration_code(who: Admin) -> RegistrationCodeOut:
        """A single-use code the CA owner signs into a verification certificate."""
        record = await run(ops.new_registration_code, actor=who.name)
        return RegistrationCodeOut(
            code=record.code,
            expires_at=record.expires_at,
            how_to=(
                f"tether ca verification-cert --ca <CA directory> --code {record.code} "
                "--out verification.pem; then POST /api/v1/cas with both certificates"
            ),
        )

    @app.post("/api/v1/cas", status_code=201, response_model=CAOut, tags=["cas"])
    async def register_ca(who: Admin, body: RegisterCAIn) -> CAOut:
        """Register a CA whose owner proved possession of its key (verification certificate)."""
        record = await run(
            ops.register_ca,
            body.certificate_pem.encode(),
            body.verification_certificate_pem.encode(),
            code=body.registration_code,
            role=body.role,
            allow_auto_registration=body.allow_auto_registration,
            actor=who.name,
        )
        return CAOut.of(record)

    @app.get("/api/v1/cas/{fingerprint}", response_model=CAOut, tags=["cas"])
    async def get_ca(who: Admin, fingerprint: str) -> CAOut:
        """One registered CA."""
        return CAOut.of(await run(registry.get_ca, fingerprint))

    @app.post("/api/v1/cas/{fingerprint}/status", response_model=CAOut, tags=["cas"])
    async def set_ca_status(who: Admin, fingerprint: str, body: CAStatusIn) -> CAOut:
        """Activate, deactivate or revoke a CA; leaving active cuts every device under it."""
        record = await run(ops.set_ca_status, fingerprint, body.status, actor=who.name)
        return CAOut.of(record)

    @app.put("/api/v1/cas/{fingerprint}/crl", response_model=CrlEffectOut, tags=["crl"])
    async def upload_ca_crl(who: Admin, fingerprint: str, body: CrlIn) -> CrlEffectOut:
        """Publish the CRL of a registered CA whose key the cloud does not hold; it takes
        effect at once: every listed certificate is revoked and its session dropped."""
        effect = await run(ops.publish_crl, fingerprint, body.crl_pem.encode(), actor=who.name)
        return CrlEffectOut.of(effect)

    @app.put("/api/v1/crl/root", response_model=CrlEffectOut, tags=["crl"])
    async def upload_root_crl(who: Admin, body: CrlIn) -> CrlEffectOut:
        """Publish the root CRL the ceremony signed (checked against the pinned root); every
        issuing CA it lists is revoked, and with it every device under that CA."""
        crl = body.crl_pem.encode()
        return CrlEffectOut.of(await run(ops.publish_crl, ROOT_CRL_ISSUER, crl, actor=who.name))

    # -- audit -----------------------------------------------------------------------------

    def run_hygiene(options: HygieneOptions) -> HygieneReport:
        view, why = None, "the API was started without a view of the gateway"
        if live_view is not None:
            try:
                view = live_view()
            except LiveViewUnavailable as exc:
                why = exc.message
        return audit_hygiene(registry, options, live=view, live_unavailable=why)

    @app.get("/api/v1/audit/hygiene", tags=["audit"])
    async def hygiene(
        who: Admin,
        certificate_days: Annotated[int, Query(ge=1, le=3650)] = 30,
        ca_days: Annotated[int, Query(ge=1, le=3650)] = 90,
        unseen_days: Annotated[int, Query(ge=1, le=3650)] = 30,
    ) -> dict[str, Any]:
        """The hygiene audit (``tether audit``'s checks and JSON; see tether.cloud.hygiene)."""
        options = HygieneOptions(certificate_days, ca_days, unseen_days)
        return (await run(run_hygiene, options)).to_dict()

    @app.get("/api/v1/audit", response_model=AuditPage, tags=["audit"])
    async def list_audit(
        who: Admin,
        target: Annotated[str | None, Query(max_length=200)] = None,
        offset: Offset = 0,
        limit: Limit = 50,
    ) -> AuditPage:
        """The audit log, newest first."""
        page = await run(registry.list_audit, target=target, offset=offset, limit=limit)
        return AuditPage.of(page)

    app.include_router(policy_router(registry, ops, run=run, admin=admin))
    app.include_router(enrollment_router(ops, run=run, admin=admin))

    history = RefusalHistory()
    app.include_router(
        console_router(
            registry,
            ops,
            run=run,
            guard=guard,
            overview=partial(fleet_overview, registry, gateway=gateway_metrics, history=history),
            hygiene=partial(run_hygiene, HygieneOptions()),
            live_view=live_view,
        )
    )

    # -- public CRLs -----------------------------------------------------------------------

    def _crl_response(der: bytes) -> Response:
        return Response(der, media_type=CRL_MEDIA_TYPE, headers={"Cache-Control": "max-age=60"})

    @app.get("/crl/root.crl", tags=["crl"], response_class=Response)
    async def root_crl() -> Response:
        """The root CRL (DER), as the ceremony published it. Public."""
        return _crl_response(await run(ops.crl, ROOT_CRL_ISSUER))

    @app.get("/crl/{fingerprint}.crl", tags=["crl"], response_class=Response)
    async def ca_crl(fingerprint: str) -> Response:
        """A registered CA's CRL (DER). Public."""
        return _crl_response(await run(ops.crl, fingerprint))

    # Outermost of the app's own middleware: bodies and credentials before anything else.
    app.add_middleware(RequestGuard, guard=guard)
    # Outermost, so refusals by the guard (401, 413, 429) are counted too.
    metrics = ApiMetrics(guard, routes=lambda: app.routes)
    app.state.tether_metrics = metrics
    app.add_middleware(CountedRequests, metrics=metrics)
    return app
