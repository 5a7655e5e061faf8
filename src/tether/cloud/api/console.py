"""The web console: server-rendered Jinja2 pages over the same operations as the API.

Sign-in takes an admin token (checked like a bearer token, through the same ``AdminGuard``:
rate-limited, audited on failure, scrypt on its own lane) and opens a server-side session:
the browser holds only a random session id in a ``Secure; HttpOnly; SameSite=Strict`` cookie
scoped to ``/console``. Sessions live in this process's memory and end after
``SESSION_LIFETIME`` or on sign-out; a restart signs everyone out (there is one API process).
Every form carries the session's CSRF token, compared in constant time; the sign-in form uses
a double-submit cookie since there is no session yet. Pages are ``Cache-Control: no-store``;
the page that hands out a console key embeds the three files as ``data:`` links, so the key
exists in that one response only. Every page re-reads the session's administrator by token
id (a cheap indexed read, no KDF), so revoking the admin or rotating its token ends its
console sessions at the next page, in every process.

Lists page with ``?offset=&limit=`` (limit 1..``MAX_LIMIT``), the device list also sorts
(``?sort=`` one of ``DEVICE_SORTS``, the registry's whitelisted columns); a malformed or
out-of-range value is a 400 page naming the parameter, never a silent clamp. A device's
state is :mod:`tether.cloud.device_state`'s (a device with no usable certificate is not a
green "enabled"), connected-now from the gateway's ``/sessions`` when reachable, else
"unknown". Deactivating a CA cuts every device under it, so the form needs a ticked
confirmation box, checked on the server (no script). Times show as ``readable`` distances
with the exact UTC time as the tooltip (one macro, ``templates/_time.html``).

Why one module of ~450 lines: ``console_router`` is one router whose pages share a closure
(the session store, the CSRF checks, the templates and the admin service); each route is a
few lines over ``tether.cloud.operations``, which holds the logic.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.templating import Jinja2Templates

from tether.cloud.api.errors import status_for
from tether.cloud.api.guard import AdminGuard
from tether.cloud.api.schemas import KEY_ESCROW_WARNING
from tether.cloud.device_state import device_states
from tether.cloud.hygiene import LiveView
from tether.cloud.observability.overview import readable
from tether.cloud.operations import AdminOperations
from tether.cloud.registry import CAStatus, DeviceStatus, Page, Registry
from tether.errors import (
    ConfigurationError,
    InvalidInputError,
    PermissionDeniedError,
    TetherError,
)
from tether.pki import sha256_fingerprint
from tether.pki.files import REVOCATION_REASONS, parse_reason

SESSION_COOKIE = "tether_session"
LOGIN_COOKIE = "tether_login_csrf"
SESSION_LIFETIME = 8 * 3600.0
_MAX_SESSIONS = 10_000
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
DEVICE_SORTS = ("serial", "-serial", "last_seen", "-last_seen", "status", "-status")
_templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


def exact(at: datetime) -> str:
    """The exact time the console shows as a tooltip beside a ``readable`` distance."""
    return at.strftime("%Y-%m-%d %H:%M UTC")


# Times render through the ``when`` macro (templates/_time.html): readable, exact as tooltip.
_templates.env.globals.update(readable=readable, exact=exact)


class ConsoleQueryError(InvalidInputError):
    """A console page was asked for a window or order it does not serve."""

    code = "console_invalid_query"


class ConfirmationMissingError(InvalidInputError):
    """A form that cuts devices was sent without its confirmation box ticked."""

    code = "confirmation_required"


def window(offset: str | None, limit: str | None) -> tuple[int, int]:
    """``offset`` and ``limit`` from a page's query (400 on anything out of range)."""
    try:
        start = 0 if offset in (None, "") else int(offset)
        size = DEFAULT_LIMIT if limit in (None, "") else int(limit)
    except ValueError:
        raise ConsoleQueryError("offset and limit must be whole numbers.") from None
    if start < 0:
        raise ConsoleQueryError("offset must be 0 or more.")
    if not 1 <= size <= MAX_LIMIT:
        raise ConsoleQueryError(f"limit must be between 1 and {MAX_LIMIT}.")
    return start, size


def page_links(path: str, page: Page[Any], **params: str | None) -> dict[str, str | None]:
    """The previous and next links of ``page``, keeping the other query parameters."""
    kept = {k: v for k, v in params.items() if v}

    def link(offset: int) -> str:
        return f"{path}?{urlencode({**kept, 'offset': offset, 'limit': page.limit})}"

    previous = link(max(page.offset - page.limit, 0)) if page.offset > 0 else None
    following = None if page.next_offset is None else link(page.next_offset)
    return {"previous": previous, "next": following}


class CSRFError(PermissionDeniedError):
    """A console form came without the session's CSRF token."""

    code = "csrf_token_invalid"


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in admin: who (and by which token id), the form token, when it ends."""

    admin: str
    token_id: str
    csrf_token: str
    expires: float  # time.monotonic()


class _NotSignedIn(Exception):
    """Internal: send the browser to the sign-in page."""


def console_router(
    registry: Registry,
    ops: AdminOperations,
    *,
    run: Callable[..., Awaitable[Any]],
    guard: AdminGuard,
    overview: Callable[[], Any] | None = None,
    hygiene: Callable[[], Any] | None = None,
    live_view: Callable[[], LiveView] | None = None,
) -> APIRouter:
    """The ``/console`` pages: reads from ``registry``, every change through ``ops``.

    ``run`` runs blocking work on the API's pool; ``guard`` checks sign-in tokens;
    ``overview`` builds the fleet overview (``tether.cloud.observability.overview``),
    ``hygiene`` runs the hygiene audit (``tether.cloud.hygiene``); ``live_view`` reads the
    gateway's sessions for "connected now" (without it, or when it fails: unknown).
    """
    router = APIRouter(prefix="/console", include_in_schema=False)
    sessions: dict[str, ConsoleSession] = {}

    def page(
        request: Request,
        name: str,
        session: ConsoleSession | None,
        status: int = 200,
        **context: Any,
    ) -> Response:
        context.update(
            admin=None if session is None else session.admin,
            csrf_token=None if session is None else session.csrf_token,
        )
        response = _templates.TemplateResponse(request, name, context, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        return response

    def current(request: Request) -> ConsoleSession:
        sid = request.cookies.get(SESSION_COOKIE, "")
        session = sessions.get(sid)
        if session is None or session.expires < time.monotonic():
            sessions.pop(sid, None)
            raise _NotSignedIn
        return session

    async def checked_form(request: Request, session: ConsoleSession) -> dict[str, str]:
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not hmac.compare_digest(form.get("csrf_token", ""), session.csrf_token):
            raise CSRFError("The form's CSRF token is missing or stale; reload the page.")
        return form

    async def still_admin(session: ConsoleSession) -> bool:
        """Is the session's admin still active with the token it signed in with?"""
        admin = await run(registry.find_admin, session.token_id)
        return admin is not None and admin.name == session.admin

    async def guarded(request: Request, action: Callable[[ConsoleSession], Any]) -> Response:
        """Run a page action: sign-in redirect, or an error page for a refusal."""
        try:
            session = current(request)
        except _NotSignedIn:
            return RedirectResponse("/console/login", status_code=303)
        try:
            valid = await still_admin(session)
        except TetherError as exc:
            return page(
                request, "error.html", session, status_for(exc), code=exc.code, message=exc.message
            )
        if not valid:  # revoked, or its token rotated: the session ends here
            sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
            response = RedirectResponse("/console/login", status_code=303)
            response.delete_cookie(SESSION_COOKIE, path="/console")
            return response
        try:
            return await action(session)
        except TetherError as exc:
            return page(
                request, "error.html", session, status_for(exc), code=exc.code, message=exc.message
            )

    @router.get("/login")
    async def login_form(request: Request) -> Response:
        token = secrets.token_urlsafe(32)
        response = _templates.TemplateResponse(
            request, "login.html", {"csrf_token": token, "admin": None, "error": None}
        )
        response.headers["Cache-Control"] = "no-store"
        response.set_cookie(
            LOGIN_COOKIE, token, secure=True, httponly=True, samesite="strict", path="/console"
        )
        return response

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(form.get("csrf_token", ""), expected):
            return page(
                request, "error.html", None, 403, code=CSRFError.code,
                message="The sign-in form expired; reload the sign-in page.",
            )  # fmt: skip
        try:
            host = request.client.host if request.client else None
            admin = await guard.authenticate(form.get("token", "").strip(), host)
        except TetherError as exc:
            fresh = secrets.token_urlsafe(32)
            response = _templates.TemplateResponse(
                request,
                "login.html",
                {"csrf_token": fresh, "admin": None, "error": exc.message},
                status_code=status_for(exc),
            )
            response.set_cookie(
                LOGIN_COOKIE, fresh, secure=True, httponly=True, samesite="strict", path="/console"
            )
            return response
        now = time.monotonic()
        for sid in [s for s, v in sessions.items() if v.expires < now]:
            del sessions[sid]
        if len(sessions) >= _MAX_SESSIONS:
            sessions.pop(next(iter(sessions)))
        sid = secrets.token_urlsafe(32)
        sessions[sid] = ConsoleSession(
            admin.name, admin.token_id, secrets.token_urlsafe(32), now + SESSION_LIFETIME
        )
        response = RedirectResponse("/console/devices", status_code=303)
        response.set_cookie(
            SESSION_COOKIE, sid, secure=True, httponly=True, samesite="strict", path="/console"
        )
        response.delete_cookie(LOGIN_COOKIE, path="/console")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        async def action(session: ConsoleSession) -> Response:
            await checked_form(request, session)
            sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
            response = RedirectResponse("/console/login", status_code=303)
            response.delete_cookie(SESSION_COOKIE, path="/console")
            return response

        return await guarded(request, action)

    @router.get("")
    @router.get("/")
    async def home() -> Response:
        return RedirectResponse("/console/devices", status_code=303)

    @router.get("/overview")
    async def fleet(request: Request) -> Response:
        async def action(session: ConsoleSession) -> Response:
            if overview is None:
                raise ConfigurationError("this API was started without a fleet overview")
            built = await run(overview)
            return page(request, "overview.html", session, o=built)

        return await guarded(request, action)

    @router.get("/hygiene")
    async def hygiene_page(request: Request) -> Response:
        async def action(session: ConsoleSession) -> Response:
            if hygiene is None:
                raise ConfigurationError("this API was started without the hygiene audit")
            report = await run(hygiene)
            return page(request, "hygiene.html", session, report=report)

        return await guarded(request, action)

    @router.get("/devices")
    async def devices(
        request: Request,
        search: str | None = None,
        offset: str | None = None,
        limit: str | None = None,
        sort: str | None = None,
    ) -> Response:
        async def action(session: ConsoleSession) -> Response:
            start, size = window(offset, limit)
            order = sort or "serial"
            if order not in DEVICE_SORTS:
                raise ConsoleQueryError(f"sort must be one of {', '.join(DEVICE_SORTS)}.")
            listing = await run(
                registry.list_devices,
                search=search or None, offset=start, limit=size, order=order,
            )  # fmt: skip
            states = await run(device_states, registry, listing.items, live_view=live_view)
            kept = {"search": search} if search else {}
            sorts = {
                key: "/console/devices?" + urlencode({**kept, "sort": key, "limit": size})
                for key in DEVICE_SORTS
            }
            return page(
                request, "devices.html", session,
                page=listing, search=search, states=states, sort=order, sorts=sorts,
                links=page_links("/console/devices", listing, search=search, sort=sort),
            )  # fmt: skip

        return await guarded(request, action)

    @router.post("/devices")
    async def create_device(request: Request) -> Response:
        async def action(session: ConsoleSession) -> Response:
            form = await checked_form(request, session)
            bundle = await run(
                ops.create_console_device, form.get("serial", "").strip(), actor=session.admin
            )
            serial = bundle.device.serial
            files = [
                ("pinned-ca.pem", bundle.pinned_ca_pem),
                (f"{serial}.crt.pem", bundle.certificate_pem),
                (f"{serial}.key.pem", bundle.private_key_pem),
            ]
            links = [
                (name, "data:application/x-pem-file;base64,"
                 + base64.b64encode(text.encode()).decode())
                for name, text in files
            ]  # fmt: skip
            return page(
                request, "created.html", session, 201,
                serial=serial, files=links, warning=KEY_ESCROW_WARNING,
            )  # fmt: skip

        return await guarded(request, action)

    @router.get("/devices/{serial}")
    async def device(request: Request, serial: str) -> Response:
        async def action(session: ConsoleSession) -> Response:
            record = await run(registry.get_device, serial)
            certs = await run(registry.list_certificates, device_serial=serial, limit=1000)
            states = await run(
                device_states, registry, [record],
                live_view=live_view, certificates={serial: certs.items},
            )  # fmt: skip
            chain: list[tuple[str, str]] = []
            if certs.items:
                newest = certs.items[-1]
                issuer = await run(registry.get_ca, newest.issuer_fingerprint)
                chain = [(newest.subject, newest.fingerprint), (issuer.subject, issuer.fingerprint)]
                root = ops.root_certificate
                if issuer.certificate().issuer == root.subject:
                    chain.append((root.subject.rfc4514_string(), sha256_fingerprint(root)))
            effective = await run(ops.effective_policy, "device", serial)
            return page(
                request, "device.html", session,
                device=record, state=states[serial], certificates=certs.items, chain=chain,
                reasons=REVOCATION_REASONS, policy=effective,
            )  # fmt: skip

        return await guarded(request, action)

    @router.post("/devices/{serial}/groups")
    async def device_group(request: Request, serial: str) -> Response:
        """Add (``add=group``) or remove (``remove=group``) a group of the device."""

        async def action(session: ConsoleSession) -> Response:
            form = await checked_form(request, session)
            if form.get("remove"):
                await run(ops.remove_device_group, serial, form["remove"], actor=session.admin)
            else:
                group = form.get("group", "").strip()
                await run(ops.add_device_group, serial, group, actor=session.admin)
            return RedirectResponse(f"/console/devices/{serial}", status_code=303)

        return await guarded(request, action)

    @router.post("/devices/{serial}/attributes")
    async def device_attribute(request: Request, serial: str) -> Response:
        """Set an attribute (an empty value removes it)."""

        async def action(session: ConsoleSession) -> Response:
            form = await checked_form(request, session)
            value = form.get("value", "").strip() or None
            name = form.get("name", "").strip()
            await run(ops.set_device_attribute, serial, name, value, actor=session.admin)
            return RedirectResponse(f"/console/devices/{serial}", status_code=303)

        return await guarded(request, action)

    async def _set_status(request: Request, serial: str, status: DeviceStatus) -> Response:
        async def action(session: ConsoleSession) -> Response:
            await checked_form(request, session)
            await run(ops.set_device_status, serial, status, actor=session.admin)
            return RedirectResponse(f"/console/devices/{serial}", status_code=303)

        return await guarded(request, action)

    @router.post("/devices/{serial}/disable")
    async def disable(request: Request, serial: str) -> Response:
        return await _set_status(request, serial, DeviceStatus.DISABLED)

    @router.post("/devices/{serial}/enable")
    async def enable(request: Request, serial: str) -> Response:
        return await _set_status(request, serial, DeviceStatus.ENABLED)

    @router.post("/certificates/{fingerprint}/revoke")
    async def revoke(request: Request, fingerprint: str) -> Response:
        async def action(session: ConsoleSession) -> Response:
            form = await checked_form(request, session)
            reason = parse_reason(form.get("reason", "unspecified"))
            record = await run(
                ops.revoke_certificate, fingerprint, reason=reason, actor=session.admin
            )
            target = record.device_serial
            url = f"/console/devices/{target}" if target else "/console/devices"
            return RedirectResponse(url, status_code=303)

        return await guarded(request, action)

    @router.get("/cas")
    async def cas(request: Request) -> Response:
        async def action(session: ConsoleSession) -> Response:
            return page(request, "cas.html", session, cas=await run(registry.list_cas))

        return await guarded(request, action)

    @router.post("/cas/{fingerprint}/status")
    async def ca_status(request: Request, fingerprint: str) -> Response:
        async def action(session: ConsoleSession) -> Response:
            form = await checked_form(request, session)
            wanted = form.get("status", "")
            if wanted not in (CAStatus.ACTIVE.value, CAStatus.INACTIVE.value):
                raise ConsoleQueryError("status must be active or inactive.")
            if wanted == CAStatus.INACTIVE.value and form.get("confirm") != "yes":
                raise ConfirmationMissingError(
                    "Deactivating a CA cuts every device under it: tick the confirmation box."
                )
            await run(ops.set_ca_status, fingerprint, CAStatus(wanted), actor=session.admin)
            return RedirectResponse("/console/cas", status_code=303)

        return await guarded(request, action)

    @router.get("/audit")
    async def audit(
        request: Request, offset: str | None = None, limit: str | None = None
    ) -> Response:
        async def action(session: ConsoleSession) -> Response:
            start, size = window(offset, limit)
            listing = await run(registry.list_audit, offset=start, limit=size)
            rows = [
                {"id": e.id, "at": e.at, "actor": e.actor, "action": e.action,
                 "target": e.target, "details": dict(e.details)}
                for e in listing.items
            ]  # fmt: skip
            return page(
                request, "audit.html", session,
                entries=rows, total=listing.total,
                links=page_links("/console/audit", listing),
            )  # fmt: skip

        return await guarded(request, action)

    return router
