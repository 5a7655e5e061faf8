"""The API's bounds act, answer with their status and Retry-After, are audited and reported.

Counters, not clocks: "no scrypt" is asserted with the process's KDF counter, "before the
body is read" by sending only the headers of a 256 MiB request and getting the answer.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from tests.cloud.api.conftest import Api, pinned_context
from tether.cloud.admin import kdf_runs
from tether.cloud.api.errors import TokenLaneFullError
from tether.cloud.api.guard import TokenLane
from tether.cloud.settings import ApiLimitOptions

HUGE = 256 * 1024 * 1024
UNKNOWN = "tether_0123456789abcdef_" + "A" * 43


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _client_from(api: Api, address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (another loopback address)."""
    transport = httpx.HTTPTransport(verify=pinned_context(api.cloud), local_address=address)
    return httpx.Client(base_url=f"https://127.0.0.1:{api.port}", transport=transport, timeout=10)


def _wrong_secret(token: str) -> str:
    return f"tether_{token.split('_')[1]}_{'B' * 43}"


def _limits(api: Api) -> dict[str, object]:
    response = api.http.get("/api/v1/limits")
    assert response.status_code == 200, response.text
    return response.json()


def test_failed_credentials_are_throttled_per_address_and_audited_boundedly(
    api_with: Callable[..., Api],
) -> None:
    api = api_with(limits=ApiLimitOptions(auth_failures_per_address=5))
    assert api.http.get("/api/v1/whoami").status_code == 200  # verified (cached) before
    start = api.registry.last_audit_id()
    statuses = [
        api.anonymous.get("/api/v1/whoami", headers=_bearer(UNKNOWN)).status_code for _ in range(5)
    ]
    assert statuses == [401] * 5
    throttled = api.anonymous.get("/api/v1/whoami", headers=_bearer(UNKNOWN))
    assert throttled.status_code == 429 and throttled.json()["code"] == "api_auth_throttled"
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    # Even a malformed token and the right id with a wrong secret: 429, no KDF.
    before = kdf_runs()
    for token in ("not-a-token", _wrong_secret(api.token)):
        assert api.anonymous.get("/api/v1/whoami", headers=_bearer(token)).status_code == 429
    assert kdf_runs() == before
    # The token this process already verified still works from the throttled address.
    assert api.http.get("/api/v1/whoami").status_code == 200

    with _client_from(api, "127.0.0.2") as other:
        assert other.get("/api/v1/whoami", headers=_bearer(UNKNOWN)).status_code == 401
        assert other.get("/api/v1/whoami", headers=_bearer(api.token)).status_code == 200

    rows = [(e.action, e.target) for e in api.registry.audit_after(start)]
    assert rows == [
        ("api.auth_failed", "127.0.0.1"),
        ("api.auth_throttled", "127.0.0.1"),
        ("api.auth_failed", "127.0.0.2"),
    ]
    acted = _limits(api)["acted"]
    assert acted["api_auth_throttled"] == 3  # type: ignore[index]
    assert acted["api_credential_invalid"] == 6  # type: ignore[index]


def test_the_audit_budget_bounds_rows_for_all_addresses_together(
    api_with: Callable[..., Api],
) -> None:
    limits = ApiLimitOptions(auth_failures_per_address=2, failure_audit_rows_per_window=1)
    api = api_with(limits=limits)
    assert api.http.get("/api/v1/whoami").status_code == 200  # verified before the throttle
    start = api.registry.last_audit_id()
    for address in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
        with _client_from(api, address) as client:
            for _ in range(2):
                assert client.get("/api/v1/whoami", headers=_bearer(UNKNOWN)).status_code == 401
    assert [e.target for e in api.registry.audit_after(start)] == ["127.0.0.1"]
    assert _limits(api)["acted"]["api_failure_audit_suppressed"] == 5  # type: ignore[index]


def test_scrypt_checks_are_rate_limited_per_address(
    api_with: Callable[..., Api],
) -> None:
    limits = ApiLimitOptions(kdf_burst_per_address=2, kdf_per_second_per_address=0.01)
    api = api_with(limits=limits)
    wrong = _wrong_secret(api.token)
    before = kdf_runs()
    codes = [api.anonymous.get("/api/v1/whoami", headers=_bearer(wrong)) for _ in range(3)]
    assert [r.status_code for r in codes] == [401, 401, 429]
    assert codes[2].json()["code"] == "api_rate_limited"
    assert int(codes[2].headers["Retry-After"]) >= 1
    assert kdf_runs() == before + 2
    with _client_from(api, "127.0.0.2") as other:  # its own bucket
        assert other.get("/api/v1/whoami", headers=_bearer(api.token)).status_code == 200


def test_unknown_token_ids_never_reach_the_scrypt_lane(
    api_with: Callable[..., Api],
) -> None:
    limits = ApiLimitOptions(
        token_check_threads=1,
        token_check_max_pending=1,
        auth_failures_per_address=100_000,
        kdf_burst_per_address=100_000,
    )
    api = api_with(limits=limits)
    before = kdf_runs()

    def burst(worker: int) -> list[int]:
        with httpx.Client(
            base_url=f"https://127.0.0.1:{api.port}", verify=pinned_context(api.cloud)
        ) as client:
            return [
                client.get(
                    "/api/v1/whoami", headers=_bearer(f"tether_{worker:08x}{n:08x}_{'C' * 43}")
                ).status_code
                for n in range(25)
            ]

    with ThreadPoolExecutor(8) as pool:
        statuses = [s for batch in pool.map(burst, range(8)) for s in batch]
    assert statuses == [401] * 200
    assert kdf_runs() == before
    report = _limits(api)
    assert report["acted"]["api_token_lane_full"] == 0  # type: ignore[index]
    assert report["token_lane"] == {"threads": 1, "max_pending": 1, "pending": 0}


def test_a_full_token_lane_refuses_at_once_instead_of_queueing() -> None:
    release = threading.Event()

    async def scenario() -> None:
        lane = TokenLane(threads=1, max_pending=1)
        try:
            first = asyncio.ensure_future(lane.run(release.wait, 10))
            await asyncio.sleep(0)  # let it take the slot
            with pytest.raises(TokenLaneFullError) as refused:
                await lane.run(release.wait, 10)
            assert refused.value.retry_after == 1.0
            release.set()
            assert await first is True
            assert lane.pending == 0
            assert await lane.run(lambda: "free again") == "free again"
        finally:
            release.set()
            lane.close()

    asyncio.run(scenario())


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int


def _open(api: Api) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", api.port), timeout=10)
    return pinned_context(api.cloud).wrap_socket(raw, server_hostname="127.0.0.1")


def _read_response(sock: ssl.SSLSocket, sent: int, data: bytes) -> RawResponse:
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return RawResponse(int(lines[0].split()[1]), headers, body, sent)


def _huge_request(
    api: Api,
    *,
    authorization: str | None,
    chunked: bool,
    path: str = "/api/v1/devices",
    content_type: str = "application/json",
) -> RawResponse:
    """Send only the headers of a 256 MiB POST, then a body slowly until an answer comes."""
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{api.port}",
        f"Content-Type: {content_type}",
        "Transfer-Encoding: chunked" if chunked else f"Content-Length: {HUGE}",
    ]
    if authorization:
        head.append(f"Authorization: {authorization}")
    with _open(api) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sent = 0
        piece = b"x" * 16384
        framed = b"4000\r\n" + piece + b"\r\n" if chunked else piece
        while sent < 64 * 1024 * 1024:  # a quarter of the body at most: the answer comes first
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable or sock.pending():
                # Readable may be a TLS 1.3 session ticket only: look without blocking.
                sock.settimeout(0.0)
                try:
                    first = sock.recv(65536)
                except ssl.SSLWantReadError:
                    first = None
                finally:
                    sock.settimeout(10)
                if first is not None:
                    return _read_response(sock, sent, first)
            sock.sendall(framed)
            sent += len(piece)
        raise AssertionError(f"no answer after {sent} bytes of the body")


def test_a_huge_declared_body_without_authorization_is_refused_before_it_is_read(
    api: Api,
) -> None:
    # The declared length is checked first (it costs nothing): 413, not a byte read.
    response = _huge_request(api, authorization=None, chunked=False)
    assert response.status == 413 and response.sent < 1024 * 1024
    assert response.headers["connection"] == "close"


@pytest.mark.parametrize(
    "authorization", [None, "Basic YWRtaW46YWRtaW4=", "Bearer"], ids=["missing", "basic", "empty"]
)
def test_a_streamed_body_without_a_valid_authorization_is_refused_before_it_is_read(
    api: Api, authorization: str | None
) -> None:
    response = _huge_request(api, authorization=authorization, chunked=True)
    assert response.status == 401
    assert json.loads(response.body)["code"] == "admin_credential_invalid"
    assert response.headers["connection"] == "close"
    assert response.sent < 1024 * 1024


def test_a_declared_body_over_the_limit_is_refused_with_413_before_it_is_read(api: Api) -> None:
    response = _huge_request(api, authorization=f"Bearer {api.token}", chunked=False)
    assert response.status == 413 and response.sent < 1024 * 1024
    assert json.loads(response.body)["code"] == "api_body_too_large"
    assert response.headers["connection"] == "close"


def test_a_streamed_body_is_cut_off_at_the_limit(api: Api) -> None:
    before = api.registry.list_devices().total
    response = _huge_request(api, authorization=f"Bearer {api.token}", chunked=True)
    assert response.status == 413, response
    assert json.loads(response.body)["code"] == "api_body_too_large"
    assert response.headers["connection"] == "close"
    assert 128 * 1024 <= response.sent < 8 * 1024 * 1024
    assert api.registry.list_devices().total == before
    assert _limits(api)["acted"]["api_body_too_large"] == 1  # type: ignore[index]
    # A body under the limit still works on a new connection.
    assert api.http.post("/api/v1/devices", json={"serial": "SMALL-1"}).status_code == 201


def test_the_limits_report_shows_the_configured_bounds(
    api_with: Callable[..., Api],
) -> None:
    api = api_with(limits=ApiLimitOptions(max_body_bytes=4096))
    report = _limits(api)
    assert report["limits"]["max_body_bytes"] == 4096  # type: ignore[index]
    assert set(report["acted"]) >= {  # type: ignore[arg-type]
        "api_rate_limited",
        "api_auth_throttled",
        "api_token_lane_full",
        "api_body_too_large",
        "api_credential_missing",
    }
    assert api.anonymous.get("/api/v1/limits").status_code == 401
    too_big = api.http.post("/api/v1/devices", content=b"{" + b" " * 5000 + b"}")
    assert too_big.status_code == 413


def test_uvicorn_bounds_connections_and_header_size_with_our_reason_code(
    api_with: Callable[..., Api],
) -> None:
    api = api_with(limits=ApiLimitOptions(max_connections=2, max_header_bytes=4096))
    request = f"GET /api/v1/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api.token}\r\n"
    with _open(api) as first, _open(api) as second:
        first.sendall((request + "\r\n").encode())
        assert _read_response(first, 0, first.recv(65536)).status in (200, 503)
        second.sendall((request + "\r\n").encode())
        assert _read_response(second, 0, second.recv(65536)).status == 503
    with _open(api) as big:
        # The headers never end: the server must give up once they pass the bound (a whole
        # oversized request arriving in one read would be parsed, so do not send its end).
        big.sendall((request + "X-Padding: " + "p" * 65536).encode())
        assert _read_response(big, 0, big.recv(65536)).status == 400
    api.http.close()  # its idle connection counts too
    with httpx.Client(
        base_url=f"https://127.0.0.1:{api.port}", verify=pinned_context(api.cloud)
    ) as fresh:
        report = fresh.get("/api/v1/limits", headers=_bearer(api.token)).json()
    assert report["acted"]["api_concurrency_limited"] >= 1


def test_a_huge_console_form_is_cut_off_too(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    response = _huge_request(
        api,
        authorization=None,
        chunked=True,
        path="/console/login",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status == 413
    assert 128 * 1024 <= response.sent < 8 * 1024 * 1024
    assert not [r for r in caplog.records if "Exception in ASGI application" in r.getMessage()]


def test_the_address_table_is_bounded_and_says_so(api_with: Callable[..., Api]) -> None:
    api = api_with(limits=ApiLimitOptions(tracked_addresses=2))
    assert api.http.get("/api/v1/whoami").status_code == 200
    for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        with _client_from(api, address) as client:
            assert client.get("/api/v1/whoami", headers=_bearer(UNKNOWN)).status_code == 401
    report = _limits(api)
    assert report["tracked_addresses"] == 2
    assert report["acted"]["api_addresses_evicted"] >= 2  # type: ignore[index]


def test_failed_console_sign_ins_are_throttled_like_bearer_tokens(
    api_with: Callable[..., Api],
) -> None:
    api = api_with(limits=ApiLimitOptions(auth_failures_per_address=2))
    with httpx.Client(
        base_url=f"https://127.0.0.1:{api.port}", verify=pinned_context(api.cloud)
    ) as browser:
        statuses = []
        for _ in range(3):
            form = browser.get("/console/login")
            csrf = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            answer = browser.post("/console/login", data={"csrf_token": csrf, "token": UNKNOWN})
            statuses.append(answer.status_code)
    assert statuses == [401, 401, 429]
    assert [e.action for e in api.registry.audit_after(0) if e.action.startswith("api.")] == [
        "api.auth_failed",
        "api.auth_throttled",
    ]
