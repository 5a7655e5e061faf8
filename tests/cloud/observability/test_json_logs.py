"""JSON logs: one object per line with the reason code as ``tether_code``.

The formatter is checked on the gateway's own log calls, then ``tether cloud serve --log-format
json`` is run for real and its stderr parsed line by line.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
from pathlib import Path

import pytest

from tests.attack.serve import make_data_dir
from tests.cloud.conftest import CloudPKI
from tests.support.cli import cli_env, tether_command
from tether.cloud.gateway.events import log_event
from tether.cloud.observability.logs import JsonFormatter, formatter


def test_a_gateway_event_is_one_json_object_with_its_code() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tether.gateway")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        log_event(
            logging.WARNING,
            "certificate_revoked",
            'refused: "quoted"\nand a newline',
            peer="127.0.0.1:4000",
            identity="DEV-1",
        )
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("failed", extra={"tether_code": "gateway_internal_error"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # the newline in the message stayed inside its object
    event, failure = (json.loads(line) for line in lines)
    assert event["tether_code"] == "certificate_revoked"
    assert event["level"] == "WARNING" and event["logger"] == "tether.gateway"
    assert event["peer"] == "127.0.0.1:4000" and event["identity"] == "DEV-1"
    assert event["message"].endswith('refused: "quoted"\nand a newline')
    assert event["time"].endswith("Z")
    assert failure["tether_code"] == "gateway_internal_error"
    assert "RuntimeError: boom" in failure["exception"]


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log format"):
        formatter("xml")


def test_serve_writes_json_lines(cloud_pki: CloudPKI, tmp_path: Path) -> None:
    settings = make_data_dir(tmp_path, cloud_pki)
    args = ["--port", "0", "--api-port", "0", "--metrics-port", "0", "--api-metrics-port", "0",
            "--publish-port", "0"]  # fmt: skip
    refused = subprocess.run(
        tether_command("cloud", "serve", str(settings.data_dir), *args, "--log-format", "xml"),
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert refused.returncode == 2 and "log_format_unknown" in refused.stderr  # usage error

    process = subprocess.Popen(
        tether_command("cloud", "serve", str(settings.data_dir), *args, "--log-format", "json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        for line in process.stdout:  # bounded by the test timeout: serve prints these at once
            if "metrics" in line:
                break
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    objects = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert objects, err
    codes = {entry.get("tether_code") for entry in objects}
    assert {"gateway_listening", "gateway_stopping"} <= codes
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in objects)
