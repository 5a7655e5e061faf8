"""The admin API's request metrics: by route template and status, refusals included.

The app is the real one (``create_app`` over a real registry), driven through Starlette's
test client; the exposition is also read through the API process's own listener
(``ApiEndpoints``) and checked with ``promtool``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.cloud.conftest import Cloud
from tests.cloud.observability.scrape import get, promtool_check, value
from tether.cloud.admin import create_admin
from tether.cloud.api import create_app
from tether.cloud.observability.endpoints import ApiEndpoints
from tether.cloud.observability.metrics import exposition


@pytest.fixture
def app(cloud: Cloud) -> Iterator[FastAPI]:
    made = create_app(cloud.registry, root_certificate=cloud.pki.root.certificate)
    try:
        yield made
    finally:
        made.state.tether_close()


def test_requests_are_counted_by_route_template_and_status(cloud: Cloud, app: FastAPI) -> None:
    token = create_admin(cloud.registry, "metrics-admin", actor="test:setup").token
    cloud.console_device("APIM-1")
    with TestClient(app, base_url="https://testserver") as client:
        good = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/v1/devices", headers=good).status_code == 200
        assert client.get("/api/v1/devices/APIM-1", headers=good).status_code == 200
        assert client.get("/api/v1/devices/NOPE-1", headers=good).status_code == 404
        bad = {"Authorization": "Bearer tth_nobody.nothing"}
        assert client.get("/api/v1/devices", headers=bad).status_code == 401
        assert client.get("/no/such/page").status_code == 404
    text = exposition(app.state.tether_metrics.registry).decode()

    def requests(route: str, status: str) -> float | None:
        return value(text, "tether_api_requests_total", route=route, method="GET", status=status)

    assert requests("/api/v1/devices", "200") == 1
    assert requests("/api/v1/devices", "401") == 1  # refused by the guard, before routing
    assert requests("/api/v1/devices/{serial}", "200") == 1
    assert requests("/api/v1/devices/{serial}", "404") == 1
    assert requests("unmatched", "404") == 1  # never the raw path: a scan cannot add labels
    assert "NOPE-1" not in text and "/no/such/page" not in text
    assert value(text, "tether_api_request_duration_seconds_count", route="/api/v1/devices") == 2
    assert value(text, "tether_api_limit_reached_total", code="api_auth_throttled") == 0
    checked = promtool_check(text)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_api_process_listener_serves_them(cloud: Cloud, app: FastAPI) -> None:
    endpoints = ApiEndpoints(app.state.tether_metrics, host="127.0.0.1", port=0)
    port = cloud.running.call(endpoints.start())
    try:
        status, content_type, body = get(port, "/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert "# TYPE tether_api_requests_total counter" in body
        assert get(port, "/healthz")[0] == 200
        assert get(port, "/readyz")[0] == 404  # readiness is the gateway process's question
    finally:
        cloud.running.call(endpoints.stop())
