"""The API's front door: bounded bodies, credentials checked first, scrypt on its own lane.

Issue 14 showed three ways an outsider stalled the cloud through the API: random well-formed
tokens made every request run scrypt on the loop's default thread pool (the one the gateway's
verdicts and revocation feed use); a 256 MiB body was read and parsed before the 401; and
nothing bounded how often one address could try. ``RequestGuard`` (pure ASGI, outside every
route) and ``AdminGuard`` close them:

- **Bodies.** A declared ``Content-Length`` over the limit is refused with 413 before a byte
  of the body is read; a chunked body is counted as it streams and refused (413) the moment
  it passes the limit. ``max_body_bytes`` for every request; CRL uploads (authenticated
  first) get ``max_crl_body_bytes``. An early refusal with a body still on the wire answers
  ``Connection: close``, so the server stops reading instead of draining it.
- **Credentials before bodies.** Under ``/api/v1`` a missing ``Authorization`` header is a
  401 at once; a present one is checked completely (below) before the route, and so before
  the body is read. The route's ``Admin`` dependency only picks up what the guard found.
- **Cheap steps first, the KDF last and bounded.** Parse the token (no I/O); an address over
  its failure budget gets 429 unless this process already verified exactly this token; read
  the administrator by token id on the API's executor (an unknown or revoked id is a 401
  with no KDF); a token verified before against the row's current salt and hash passes.
  Only then does scrypt run: on the *token lane*, its own ``ThreadPoolExecutor``
  (``token_check_threads``) admitting at most ``token_check_max_pending`` checks at once
  (503 ``api_token_lane_full`` and ``Retry-After: 1`` beyond, never a queue), after the
  address's token bucket allowed it (429 ``api_rate_limited``).
- **Failures are audited, boundedly.** Each address gets at most two audit rows per window
  (``api.auth_failed`` for its first failure, ``api.auth_throttled`` with the count when it is
  throttled), and all addresses together at most ``failure_audit_rows_per_window``; beyond,
  failures are counted, logged once (``api_failure_audit_suppressed``) and summarised in one
  row (target ``*``) in the next window. The audit log feeds every gateway's revocation feed,
  so it must not be something an outsider can flood.

Every refusal is logged with a stable ``tether_code`` (``LimitCode``) at most once per address
and window (global ones at most every ``_GLOBAL_LOG_EVERY`` seconds) and counted; ``report``
gives the settings and counters to ``GET /api/v1/limits``.

Why one module of ~470 lines: the two guards are one policy in two places (the ASGI
``RequestGuard`` refuses bodies before a route, ``AdminGuard`` checks credentials for it) that
share the limit settings, the ``LimitCode`` reasons and the per-address log throttle; the
sections above are the module's map.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict
from functools import partial
from typing import Any, TypeVar

from tether.cloud.admin import (
    AdminCredentialError,
    PresentedToken,
    confirmed_by_cache,
    find_candidate,
    kdf_runs,
    parse_token,
    verify_secret,
    was_verified,
)
from tether.cloud.api.errors import (
    AuthThrottledError,
    BodyTooLargeError,
    LimitExceededError,
    RateLimitedError,
    TokenLaneFullError,
    status_for,
)
from tether.cloud.api.limits import (
    AddressBook,
    AddressState,
    Counters,
    FailureAuditBudget,
    LimitCode,
    address_key,
)
from tether.cloud.registry import AdminRecord, Registry
from tether.cloud.settings import ApiLimitOptions
from tether.errors import StorageError, TetherError

log = logging.getLogger("tether.api")

T = TypeVar("T")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ADMIN_STATE_KEY = "tether_admin"
AUDIT_ACTOR = "api:guard"
_GLOBAL_LOG_EVERY = 10.0  # seconds between log lines of a global (not per-address) bound
_MISSING_MESSAGE = (
    "The admin credential is missing or not valid; send `Authorization: Bearer <token>` "
    "with a token from `tether cloud init` or `tether cloud admin add`."
)


class TokenLane:
    """The scrypt lane: its own small thread pool and a hard cap on checks in flight.

    Admission is decided on the event loop (no lock needed): a check that finds every slot
    taken is refused at once, so a flood never builds a queue that a legitimate check would
    wait behind for longer than ``max_pending`` checks.
    """

    def __init__(self, *, threads: int, max_pending: int) -> None:
        self.threads = threads
        self.max_pending = max_pending
        self.pending = 0
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="tether-token-check")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the lane; TokenLaneFullError if every slot is taken."""
        if self.pending >= self.max_pending:
            raise TokenLaneFullError(
                "Too many admin token checks are in progress; retry in a second.",
                retry_after=1.0,
            )
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, partial(fn, *args)
            )
        finally:
            self.pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class AdminGuard:
    """Checks admin tokens under the API's limits; see the module docstring for the order."""

    def __init__(
        self,
        registry: Registry,
        limits: ApiLimitOptions,
        executor: Executor,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.limits = limits
        self.counters = Counters()
        self.lane = TokenLane(
            threads=limits.token_check_threads, max_pending=limits.token_check_max_pending
        )
        self._executor = executor
        self._clock = clock
        self._book = AddressBook(
            entries=limits.tracked_addresses,
            window=limits.auth_failure_window,
            failures_per_window=limits.auth_failures_per_address,
            kdf_burst=limits.kdf_burst_per_address,
            kdf_per_second=limits.kdf_per_second_per_address,
        )
        self._audit_budget = FailureAuditBudget(
            rows=limits.failure_audit_rows_per_window, window=limits.auth_failure_window
        )
        self._global_logged: dict[LimitCode, float] = {}

    def _state(self, key: str, now: float) -> AddressState:
        """``key``'s state; counts and logs (globally, thinned) when the table forgets one."""
        evicted = self._book.evicted
        state = self._book.state(key, now)
        if self._book.evicted > evicted:
            self.counters.add(LimitCode.ADDRESSES_EVICTED, self._book.evicted - evicted)
            self._acted_globally(
                LimitCode.ADDRESSES_EVICTED, "the per-address table is full (tracked_addresses)"
            )
        return state

    async def _io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, partial(fn, *args, **kwargs)
        )

    async def authenticate(self, token: str, host: str | None) -> AdminRecord:
        """The administrator ``token`` belongs to, for a request from ``host``.

        Raises AdminCredentialError (401), AuthThrottledError or RateLimitedError (429),
        TokenLaneFullError (503); each failure of a presented credential is counted.
        """
        key = address_key(host)
        now = self._clock()
        state = self._state(key, now)
        try:
            presented = parse_token(token)
        except AdminCredentialError:
            self._refuse_if_throttled(key, state, now)
            await self.failed(key, "malformed")
            raise
        if not was_verified(presented):
            self._refuse_if_throttled(key, state, now)
        try:
            admin = await self._io(find_candidate, self.registry, presented)
        except AdminCredentialError:
            await self.failed(key, "unknown_token_id")
            raise
        if confirmed_by_cache(presented, admin):
            return admin
        self._refuse_if_throttled(key, state, now)
        wait = self._book.take_kdf(state, now)
        if wait is not None:
            self._acted(LimitCode.RATE_LIMITED, key, state, "too many token checks")
            raise RateLimitedError(
                "This address started too many admin token checks; retry later.",
                retry_after=wait,
            )
        return await self._verify(key, state, presented, admin)

    async def _verify(
        self, key: str, state: AddressState, presented: PresentedToken, admin: AdminRecord
    ) -> AdminRecord:
        try:
            return await self.lane.run(verify_secret, presented, admin)
        except TokenLaneFullError:
            self._acted_globally(LimitCode.TOKEN_LANE_FULL, "every token-check slot is taken")
            raise
        except AdminCredentialError:
            await self.failed(key, "wrong_secret")
            raise

    def _refuse_if_throttled(self, key: str, state: AddressState, now: float) -> None:
        remaining = self._book.throttled_for(state, now)
        if remaining is None:
            return
        self._acted(LimitCode.AUTH_THROTTLED, key, state, "too many failed credentials")
        raise AuthThrottledError(
            f"Too many failed admin credentials from this address; retry in "
            f"{math.ceil(remaining)} s.",
            retry_after=remaining,
        )

    async def failed(self, host_key: str, reason: str) -> None:
        """Count one failed credential from ``host_key`` (already an ``address_key``); audit
        it within the bounds of the module docstring."""
        now = self._clock()
        state = self._state(host_key, now)
        state.failures += 1
        self.counters.add(LimitCode.CREDENTIAL_INVALID)
        rows: list[tuple[str, str, dict[str, str | int | bool | None]]] = []
        window = int(self._book.window)
        if not state.audited_first:
            state.audited_first = True
            if self._audit_budget.allow(now):
                rows.append(("api.auth_failed", host_key, {"reason": reason, "window_s": window}))
        if state.failures >= self._book.failures_per_window and not state.audited_throttle:
            state.audited_throttle = True
            if self._audit_budget.allow(now):
                rows.append(
                    (
                        "api.auth_throttled",
                        host_key,
                        {"failures": state.failures, "window_s": window, "reason": reason},
                    )
                )
            log.warning(
                "admin credentials from %s failed %d times in %d s; throttled until the window "
                "ends",
                host_key,
                state.failures,
                window,
                extra={"tether_code": LimitCode.AUTH_THROTTLED.value},
            )
        if self._audit_budget.suppressed:
            self._acted_globally(
                LimitCode.FAILURE_AUDIT_SUPPRESSED, "failed credentials beyond the audit budget"
            )
        carried = self._audit_budget.take_carried() if rows else 0
        if carried:
            rows.append(("api.auth_failed", "*", {"unrecorded": carried, "window_s": window}))
        for action, target, details in rows:
            try:
                await self._io(
                    self.registry.audit,
                    actor=AUDIT_ACTOR,
                    action=action,
                    target=target,
                    details=details,
                )
            except StorageError as exc:  # a 401 stays a 401; say that the row is missing
                log.error(
                    "could not audit a failed admin credential from %s: %s", target, exc.message
                )

    def _acted(self, code: LimitCode, key: str, state: AddressState, what: str) -> None:
        self.counters.add(code)
        if code not in state.logged:
            state.logged.add(code)
            log.warning(
                "admin API refused %s: %s (%s)",
                key,
                what,
                code.value,
                extra={"tether_code": code.value},
            )

    def _acted_globally(self, code: LimitCode, what: str) -> None:
        if code not in (LimitCode.FAILURE_AUDIT_SUPPRESSED, LimitCode.ADDRESSES_EVICTED):
            self.counters.add(code)  # those two are counted where they happen
        now = self._clock()
        if now - self._global_logged.get(code, float("-inf")) >= _GLOBAL_LOG_EVERY:
            self._global_logged[code] = now
            log.warning("admin API: %s (%s)", what, code.value, extra={"tether_code": code.value})

    def acted(self, code: LimitCode, host: str | None, what: str) -> None:
        """Count a bound that acted outside ``authenticate``; log it once per address/window."""
        key = address_key(host)
        self._acted(code, key, self._state(key, self._clock()), what)

    def report(self) -> dict[str, Any]:
        """Configured limits, how often each acted, scrypt runs, the lane's state."""
        acted = self.counters.as_dict()
        acted[LimitCode.FAILURE_AUDIT_SUPPRESSED.value] = (
            self._audit_budget.suppressed + self._audit_budget.carried
        )
        return {
            "limits": asdict(self.limits),
            "acted": acted,
            "kdf_runs": kdf_runs(),
            "token_lane": {
                "threads": self.lane.threads,
                "max_pending": self.lane.max_pending,
                "pending": self.lane.pending,
            },
            "tracked_addresses": len(self._book),
        }

    def close(self) -> None:
        self.lane.close()


def _header(scope: Scope, name: bytes) -> bytes | None:
    found = [value for key, value in scope.get("headers", ()) if key.lower() == name]
    return found[0] if len(found) == 1 else (b"" if found else None)


def _is_api(path: str) -> bool:
    return path == "/api/v1" or path.startswith("/api/v1/")


def _is_crl_upload(method: str, path: str) -> bool:
    return method == "PUT" and (
        path == "/api/v1/crl/root" or (path.startswith("/api/v1/cas/") and path.endswith("/crl"))
    )


async def _send_error(
    send: Send, error: TetherError, *, close: bool, status: int | None = None
) -> None:
    status = status or status_for(error)
    body = json.dumps({"code": error.code, "message": error.message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="tether"'))
    if isinstance(error, LimitExceededError) and error.retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(error.retry_after))).encode()))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestGuard:
    """ASGI middleware: body limits and admin authentication before any route runs."""

    def __init__(self, app: ASGIApp, *, guard: AdminGuard) -> None:
        self.app = app
        self.guard = guard
        self.limits = guard.limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        host = (scope.get("client") or (None,))[0]
        limit = (
            self.limits.max_crl_body_bytes
            if _is_crl_upload(method, path)
            else self.limits.max_body_bytes
        )
        declared = _header(scope, b"content-length")
        chunked = b"chunked" in (_header(scope, b"transfer-encoding") or b"").lower()
        body_pending = chunked or (declared is not None and declared.strip() not in (b"", b"0"))
        too_large = BodyTooLargeError(
            f"The request body is larger than the API accepts ({limit} bytes)."
        )
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            self.guard.acted(LimitCode.BODY_TOO_LARGE, host, f"a {int(declared)}-byte body")
            await _send_error(send, too_large, close=True)
            return
        if _is_api(path):
            refusal = await self._authenticate(scope, host)
            if refusal is not None:
                await _send_error(send, refusal, close=body_pending)
                return
        await self._forward(scope, receive, send, limit, too_large, host)

    async def _authenticate(self, scope: Scope, host: str | None) -> TetherError | None:
        """Put the admin into the request's state, or return the refusal to send."""
        header = _header(scope, b"authorization")
        if not header:
            self.guard.counters.add(LimitCode.CREDENTIAL_MISSING)
            return AdminCredentialError(_MISSING_MESSAGE)
        scheme, _, token = header.decode("latin-1").strip().partition(" ")
        try:
            if scheme.lower() != "bearer" or not token.strip():
                await self.guard.failed(address_key(host), "not_bearer")
                raise AdminCredentialError(_MISSING_MESSAGE)
            admin = await self.guard.authenticate(token.strip(), host)
        except TetherError as exc:
            return exc
        scope.setdefault("state", {})[ADMIN_STATE_KEY] = admin
        return None

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        limit: int,
        too_large: BodyTooLargeError,
        host: str | None,
    ) -> None:
        received = 0
        started = False
        refused = False

        async def capped_receive() -> Message:
            # Over the limit: answer 413 (and close) ourselves, then tell the app the client
            # left. Raising instead would reach FastAPI's body parser, which turns any error
            # into a 400; the app's own late answer is dropped by ``tracked_send``.
            nonlocal received, started, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    self.guard.acted(LimitCode.BODY_TOO_LARGE, host, "a streamed body")
                    if not started:
                        started = True
                        await _send_error(send, too_large, close=True)
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, tracked_send)
        except Exception:
            # After our 413 the app only sees a client that left (e.g. a console form parser
            # raising ClientDisconnect): that is the refusal working, not a server error.
            if not refused:
                raise
