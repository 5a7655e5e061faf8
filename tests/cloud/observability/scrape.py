"""Reading a cloud's observability listener the way a scraper does: plain HTTP on loopback."""

from __future__ import annotations

import http.client
import shutil
import subprocess
import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

TIMEOUT = 10.0


def get(port: int, path: str, *, method: str = "GET") -> tuple[int, str, str]:
    """(status, content type, body) of one request to 127.0.0.1:port."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        connection.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    """One sample's value, or None when the exposition lacks it."""
    return samples(text).get((name, tuple(sorted(labels.items()))))


def wait_for_sample(
    port: int, name: str, want: Callable[[float | None], bool], **labels: str
) -> str:
    """Scrape until the sample satisfies ``want`` (bounded); returns that exposition."""
    deadline = time.monotonic() + TIMEOUT
    text = ""
    while time.monotonic() < deadline:
        text = get(port, "/metrics")[2]
        if want(value(text, name, **labels)):
            return text
        time.sleep(0.05)
    raise AssertionError(
        f"{name}{labels} never as wanted; last value {value(text, name, **labels)}"
    )


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on an exposition (Debian's prometheus package)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: run ./scripts/install-system-deps (package prometheus)"
    return subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
