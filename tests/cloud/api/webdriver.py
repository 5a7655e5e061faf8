"""A minimal W3C WebDriver client over httpx, driving Debian's headless chromium.

Enough for the console test (navigate, find, type, click, read, screenshot) without adding a
Selenium dependency: WebDriver is JSON over HTTP.
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import httpx

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Browser:
    """One WebDriver session."""

    def __init__(self, http: httpx.Client, session_id: str) -> None:
        self.http = http
        self.base = f"/session/{session_id}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.request(method, self.base + path, json=body)
        payload = response.json()
        if response.status_code != 200:
            raise AssertionError(f"WebDriver {method} {path}: {payload}")
        return payload["value"]

    def get(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        return self._call("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def type(self, css: str, text: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/click", {})

    def text(self, css: str) -> str:
        return str(self._call("GET", f"/element/{self.find(css)}/text"))

    def wait_text(self, css: str, expected: str, timeout: float = 10.0) -> str:
        """The text of ``css`` once it contains ``expected`` (pages load after a click)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                text = self.text(css)
                if expected in text:
                    return text
            except AssertionError:
                text = "<absent>"
            if time.monotonic() > deadline:
                raise AssertionError(f"{css} never showed {expected!r}; last {text!r}")
            time.sleep(0.05)

    def select(self, css: str, value: str) -> None:
        self.click(f"{css} option[value='{value}']")

    @property
    def source(self) -> str:
        return str(self._call("GET", "/source"))

    @property
    def url(self) -> str:
        return str(self._call("GET", "/url"))

    def screenshot(self) -> bytes:
        return base64.b64decode(self._call("GET", "/screenshot"))


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless chromium session through chromedriver; everything ends with the block."""
    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        raise AssertionError("chromedriver is missing: apt-get install chromium chromium-driver")
    port = _free_port()
    driver = subprocess.Popen(
        [driver_path, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0)
    session_id = None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if http.get("/status").json()["value"]["ready"]:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("chromedriver did not start")
            time.sleep(0.1)
        capabilities = {
            "browserName": "chrome",
            # The console's certificate comes from the test PKI, which chromium does not know.
            "acceptInsecureCerts": True,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            },
        }  # fmt: skip
        created = http.post("/session", json={"capabilities": {"alwaysMatch": capabilities}})
        assert created.status_code == 200, created.text
        session_id = created.json()["value"]["sessionId"]
        yield Browser(http, session_id)
    finally:
        if session_id is not None:
            with suppress(httpx.TransportError):
                http.delete(f"/session/{session_id}")
        http.close()
        driver.terminate()
        try:
            driver.wait(10)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait(5)
