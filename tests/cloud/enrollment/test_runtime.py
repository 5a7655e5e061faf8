"""Enrollment as `tether cloud serve` runs it: options from cloud.json, the hook named there
(entry point or HTTP with a deadline), MQTT and EST started next to the gateway."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.cloud.conftest import ACTOR, Cloud
from tests.cloud.enrollment.conftest import csr_pem
from tether.cloud.enrollment import Credential, CredentialKind
from tether.cloud.enrollment.runtime import EnrollmentRuntime, hook_from
from tether.cloud.enrollment.settings import EnrollmentOptions
from tether.cloud.operations import AdminOperations
from tether.cloud.settings import CloudSettings
from tether.errors import TetherError
from tether.pki import generate_key


class _Hook(BaseHTTPRequestHandler):
    delay = 0.0

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(self.delay)
        answer = {"allow": body["serial"] != "refused-1", "reason": "not shipped", "attributes": {}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def http_hook() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _runtime(cloud: Cloud, options: EnrollmentOptions) -> EnrollmentRuntime:
    settings: CloudSettings = replace(cloud.settings, enrollment=options)
    settings.data_dir.joinpath("cloud.json").write_bytes(settings.to_json())
    reloaded = CloudSettings.load(settings.data_dir)
    assert reloaded.enrollment == options  # cloud.json carries the section both ways
    return EnrollmentRuntime(reloaded, cloud.service, cloud.pki.device_ca)


def test_runtime_with_an_entry_point_hook(cloud: Cloud) -> None:
    options = EnrollmentOptions(
        enabled=True, est_port=0, hook="tests.cloud.enrollment.hooks:tag_site"
    )
    runtime = _runtime(cloud, options)
    port = cloud.running.call(runtime.start())
    try:
        assert port > 0
        admin = AdminOperations(
            cloud.registry,
            root_certificate=cloud.pki.root.certificate,
            online_ca=cloud.pki.device_ca,
        )
        token = admin.create_enrollment_token("rt-1", actor=ACTOR).token
        outcome = runtime.enrollment.enroll(
            csr_pem(generate_key(), "rt-1"), Credential(CredentialKind.TOKEN, token=token)
        )
        assert outcome.attributes == {"site": "test-line", "via": "token"}
        lifetime = (
            outcome.certificate.not_valid_after_utc - outcome.certificate.not_valid_before_utc
        )
        assert lifetime <= options.validity + timedelta(minutes=10)  # not_before is backdated
    finally:
        cloud.running.call(runtime.stop())


def test_http_hook_with_a_deadline(cloud: Cloud, http_hook: ThreadingHTTPServer) -> None:
    url = f"http://127.0.0.1:{http_hook.server_address[1]}/verdict"
    runtime = _runtime(
        cloud, EnrollmentOptions(enabled=True, est_enabled=False, hook_url=url, hook_deadline=2.0)
    )
    admin = AdminOperations(
        cloud.registry, root_certificate=cloud.pki.root.certificate, online_ca=cloud.pki.device_ca
    )
    for serial, delay, code in (("ok-1", 0.0, None), ("refused-1", 0.0, "hook_refused"),
                                ("late-1", 4.0, "hook_timeout")):  # fmt: skip
        _Hook.delay = delay
        token = admin.create_enrollment_token(serial, actor=ACTOR).token
        credential = Credential(CredentialKind.TOKEN, token=token)
        count = cloud.registry.list_certificates(limit=1).total
        if code is None:
            assert runtime.enrollment.enroll(csr_pem(generate_key(), serial), credential)
            continue
        with pytest.raises(TetherError) as refused:
            runtime.enrollment.enroll(csr_pem(generate_key(), serial), credential)
        assert refused.value.code == code
        assert cloud.registry.list_certificates(limit=1).total == count
    _Hook.delay = 0.0


def test_both_hooks_named_is_a_configuration_error() -> None:
    with pytest.raises(TetherError) as refused:
        hook_from(EnrollmentOptions(hook="a:b", hook_url="http://127.0.0.1:1/"))
    assert refused.value.code == "hook_ambiguous"
    with pytest.raises(TetherError) as missing:
        hook_from(EnrollmentOptions(hook="no.such.module:hook"))
    assert missing.value.code == "hook_not_loadable"
